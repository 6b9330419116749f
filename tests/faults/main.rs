//! Fault tests: a fleet of real `drover` processes on RabbitMQ, Redis and
//! PostgreSQL, disturbed while it works. They run one at a time (`scripts/test`):
//! some restart Redis or close every RabbitMQ connection.
