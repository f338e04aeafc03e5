"""Run directories -> pandas -> tables, claims, the report, Figure 3, provenance and cost."""
