//! The port suites against RabbitMQ (being written).
