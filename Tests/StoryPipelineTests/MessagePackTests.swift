import Foundation
import MessagePack
import Testing

@Suite("MessagePack, as calibre's Content Server speaks it")
struct MessagePackTests {
    @Test("every kind of value round-trips, at each size boundary of its header")
    func roundTrip() throws {
        let values: [MessagePackValue] = [
            .null, .bool(true), .bool(false), .int(0), .int(127), .int(128), .int(-1), .int(-32), .int(-33),
            .int(65_535), .int(Int64(Int32.max) + 1), .int(Int64.min), .double(1.5),
            .string(""), .string(String(repeating: "é", count: 20)), .string(String(repeating: "x", count: 70_000)),
            .binary(Data()), .binary(Data(repeating: 7, count: 300)), .binary(Data(repeating: 1, count: 70_000)),
            .array((0..<20).map { .int($0) }), .map([.init(.string("result"), .array([.null, .string("a")]))]),
            .ext(type: 2, data: Data([1, 2, 3])),
        ]
        for value in values {
            #expect(try MessagePackValue.decode(value.encoded()) == value, "\(value)")
        }
    }

    @Test("calibre's bytes: fixmap {'result': True}, and an int 16 count of bin 8")
    func knownBytes() throws {
        let answer = Data([0x81, 0xa6] + Array("result".utf8) + [0xc3])
        #expect(try MessagePackValue.decode(answer)["result"] == .bool(true))
        #expect(
            MessagePackValue.array([.int(1), .binary(Data([9]))]).encoded() == Data([0x92, 0x01, 0xc4, 0x01, 0x09]))
        #expect(MessagePackValue.int(300).encoded() == Data([0xd2, 0x00, 0x00, 0x01, 0x2c]))
    }

    @Test("truncated, lying, too deep or trailing input is an error, never a crash")
    func malformed() {
        let bad: [[UInt8]] = [
            [], [0xc4], [0xc4, 0x05, 0x01], [0xdd, 0xff, 0xff, 0xff, 0xff], [0xdf, 0x7f, 0xff, 0xff, 0xff],
            [0xa3, 0x61], [0xa2, 0xff, 0xfe], [0xc1], [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            Array(repeating: 0x91, count: 100) + [0xc0], [0xc0, 0xc0], [0xd8, 0x01],
        ]
        for bytes in bad {
            #expect(throws: MessagePackValue.DecodingError.self, "\(bytes.prefix(8))") {
                try MessagePackValue.decode(Data(bytes))
            }
        }
    }
}
