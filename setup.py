"""Package discovery for the folder mapping in pyproject.toml.

`adapters/` and `notifier/` sit at the top of the repository but install as
`policyengine.adapters` and `policyengine.notifier`; setuptools' automatic
discovery cannot express that, so the package list is computed here.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["policyengine", "policyengine.*"])
for folder, namespace in (("adapters", "policyengine.adapters"), ("notifier", "policyengine.notifier")):
    packages.append(namespace)
    packages += [f"{namespace}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages)
