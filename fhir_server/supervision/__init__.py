"""The supervision page (``/app/supervision``, issue 20 point 4): supervisors' indicators over months, programs and
clinicians side by side, small cells suppressed, and the same as CSV.  Framework-free; web/supervision_routes.py
is its HTTP side."""
