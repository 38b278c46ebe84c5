"""The person's workspace over every CRM area: the home dashboard and the demo company."""
