"""The record foundation every CRM entity stands on (DESIGN: "The CRM's record foundation")."""
