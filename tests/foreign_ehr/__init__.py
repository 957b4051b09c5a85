"""A FHIR EHR that is not ours (Medplum's FHIR store behind a SMART stand-in), for end-to-end tests."""
