import Testing

@testable import AMQP

@Suite("Which declarations go out together")
struct DeclaredTogetherTests {
    let declaration = (declaration: true, onlySends: false)
    let send = (declaration: false, onlySends: true)
    let ask = (declaration: false, onlySends: false)

    @Test("later declarations join across publishes and acks, never across a command that asks")
    func joinAcrossSends() {
        let run = [declaration, send, declaration, send, send, declaration, ask, declaration, send]
        #expect(ConnectionLoop.declaredTogether(from: 0, of: run) == [0, 2, 5])
        #expect(ConnectionLoop.declaredTogether(from: 7, of: run) == [7])
        #expect(ConnectionLoop.declaredTogether(from: 0, of: [declaration]) == [0])
        #expect(ConnectionLoop.declaredTogether(from: 0, of: [declaration, ask, declaration]) == [0])
    }
}
