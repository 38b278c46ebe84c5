"""The CRM itself (customers, contacts, leads, ...): arrives with the CRM issues."""
