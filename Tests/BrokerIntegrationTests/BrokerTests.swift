import Testing

/// Every test that needs the broker, one at a time: some stop the broker or cut connections,
/// which would break whatever else ran beside them. Nested suites inherit `.serialized`.
@Suite("Against a real RabbitMQ, one test at a time", .serialized)
enum BrokerTests {}
