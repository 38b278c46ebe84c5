"""The CRM record foundation: what every CRM record (customer, contact, activity ...) stands on."""
