"""The end-customer self-service portal: arrives with the portal issue."""
