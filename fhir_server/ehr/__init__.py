"""EHR side of the SMART app: registrations, write-back payloads, the outbox and its delivery worker."""
