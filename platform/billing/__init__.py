"""Plans, seats, subscriptions and payment gateways: arrives with the billing issue."""
