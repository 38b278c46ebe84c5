"""The CRM's record foundation: what every CRM record (customer, contact, activity ...) stands on."""
