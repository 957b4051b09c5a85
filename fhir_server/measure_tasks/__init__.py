"""Requests to complete a measure as FHIR Tasks (SDC's questionnaire-task pattern, issue 22).

A clinician (the clinician view), the EHR (REST) or a CDS card asks for a measure with a Task: code
``complete-questionnaire``, status ``requested``, for and owner the Patient, one questionnaire input
(validation/sdc_task.py checks the pattern on every write).  ``tasks.py`` makes one, lists a client's open ones,
completes them when the response arrives and cancels one; ``expiry.py`` cancels those whose expiry has passed.
Every write goes through the FHIR engine as the server, so versions, history, subscriptions and audit behave as for
any write.
"""
