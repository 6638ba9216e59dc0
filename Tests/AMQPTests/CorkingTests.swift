import Testing

@testable import AMQP

@Suite("Which commands leave corked")
struct CorkingTests {
    @Test("a stretch of sends is corked; a command that waits for the broker's answer never is")
    func stretches() {
        let send = true
        let ask = false
        func corked(whilePerforming run: [Bool]) -> [Bool] {
            run.indices.map { ConnectionLoop.corked(at: $0, of: run) }
        }
        #expect(
            corked(whilePerforming: [send, send, ask, send, send, send, ask, send])
                == [true, true, false, true, true, true, false, false])
        #expect(corked(whilePerforming: [send]) == [false], "one send goes out at once")
        #expect(corked(whilePerforming: [ask, ask]) == [false, false])
        #expect(corked(whilePerforming: [ask, send, ask]) == [false, false, false])
        #expect(corked(whilePerforming: []) == [])
    }
}
