import Testing

/// Every test that needs the broker, one at a time: some stop the broker or cut connections,
/// which would break whatever else ran beside them. Nested suites inherit `.serialized`, and
/// the time limit, per test: a test that hangs fails by name and is cancelled, and the run goes
/// on (the longest, a Content Server stopped for a minute, takes under two).
@Suite("Against a real RabbitMQ, one test at a time", .serialized, .timeLimit(.minutes(5)))
enum BrokerTests {}
