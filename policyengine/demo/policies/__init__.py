"""The policy `policyengine demo` serves (a package only so that the .policy files ship in the wheel)."""
