"""Activities (calls, visits, meetings, emails, notes) and tasks with reminders and a calendar."""
