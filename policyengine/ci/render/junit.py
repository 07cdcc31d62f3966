"""JUnit XML for CI systems that read it (GitLab, Jenkins, Azure Pipelines, test-report actions)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from policyengine.ci.runner import PolicyTestReport


def render_junit(report: PolicyTestReport) -> str:
    root = ET.Element("testsuites", name="policyengine test")
    for s in report.sets:
        suite = ET.SubElement(root, "testsuite", name=s.name or ", ".join(s.policy), tests=str(len(s.cases)),
                              failures=str(sum(c.status == "failed" for c in s.cases)),
                              errors=str(sum(c.status == "error" for c in s.cases) + (1 if s.error else 0)),
                              skipped=str(sum(c.status == "skipped" for c in s.cases)))
        if s.error:
            case = ET.SubElement(suite, "testcase", name="load policy set", classname=s.name or "policy")
            ET.SubElement(case, "error", message=s.error).text = "\n".join(s.diagnostics)
        for c in s.cases:
            case = ET.SubElement(suite, "testcase", name=c.name, classname=s.name or "policy",
                                 file=c.file, line=str(c.line))
            if c.status == "failed":
                text = "\n".join(f"{m.check}: expected {m.expected} | actual {m.actual}" for m in c.mismatches)
                ET.SubElement(case, "failure", message=c.mismatches[0].check if c.mismatches else "failed").text = text
            elif c.status == "error":
                ET.SubElement(case, "error", message=c.error or "error").text = c.error or ""
            elif c.status == "skipped":
                ET.SubElement(case, "skipped", message=c.error or "skipped")
        uncovered = [r for r in s.rules if not r.covered]
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="rule_coverage", value=f"{s.covered}/{len(s.rules)}")
        for r in uncovered:
            ET.SubElement(props, "property", name="uncovered_rule", value=f"{r.location} {r.text}")
    for fe in report.file_errors:
        suite = ET.SubElement(root, "testsuite", name=fe.file, tests="1", failures="0", errors="1")
        case = ET.SubElement(suite, "testcase", name="read test file", classname=fe.file)
        ET.SubElement(case, "error", message=f"{fe.file}:{fe.line or 1}: {fe.message}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
