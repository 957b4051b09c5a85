"""The clinician view: alliance and outcome at a glance inside the EHR (SMART app page, SVG charts)."""
