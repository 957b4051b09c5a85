"""CDS Hooks 2.0 service: alliance and outcome cards inside the EHR (discovery, services, feedback)."""
