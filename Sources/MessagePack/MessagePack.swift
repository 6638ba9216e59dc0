import Foundation

/// The part of MessagePack that calibre's Content Server speaks on `/cdb/cmd` (the protocol of
/// `calibredb --with-library http://…`): a book's file travels as binary there, which its JSON
/// form cannot carry. Written here because no package on hand reads MessagePack.
///
/// Decoding trusts nothing: lengths are checked against the bytes left, nesting is bounded, and a
/// malformed answer is an error naming the offset, never a crash.
public enum MessagePackValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case binary(Data)
    case array([MessagePackValue])
    /// Pairs in the order they came (calibre's maps have string keys).
    case map([Pair])
    /// An extension type (calibre's own: dates, sets, book metadata), kept as its bytes.
    case ext(type: Int8, data: Data)

    public struct Pair: Sendable, Hashable {
        public var key: MessagePackValue
        public var value: MessagePackValue
        public init(_ key: MessagePackValue, _ value: MessagePackValue) {
            self.key = key
            self.value = value
        }
    }

    /// The value under a string key of a map.
    public subscript(key: String) -> MessagePackValue? {
        guard case .map(let pairs) = self else { return nil }
        return pairs.first { $0.key == .string(key) }?.value
    }

    // MARK: Encoding

    public func encoded() -> Data {
        var out = Data()
        encode(into: &out)
        return out
    }

    private func encode(into out: inout Data) {
        switch self {
        case .null: out.append(0xc0)
        case .bool(let value): out.append(value ? 0xc3 : 0xc2)
        case .int(let value): Self.encode(value, into: &out)
        case .double(let value):
            out.append(0xcb)
            Self.append(value.bitPattern, bytes: 8, to: &out)
        case .string(let value):
            let bytes = Data(value.utf8)
            Self.header(count: bytes.count, fix: 0xa0, fixLimit: 32, one: 0xd9, two: 0xda, four: 0xdb, into: &out)
            out.append(bytes)
        case .binary(let bytes):
            Self.header(count: bytes.count, fix: nil, fixLimit: 0, one: 0xc4, two: 0xc5, four: 0xc6, into: &out)
            out.append(bytes)
        case .array(let values):
            Self.header(count: values.count, fix: 0x90, fixLimit: 16, one: nil, two: 0xdc, four: 0xdd, into: &out)
            for value in values { value.encode(into: &out) }
        case .map(let pairs):
            Self.header(count: pairs.count, fix: 0x80, fixLimit: 16, one: nil, two: 0xde, four: 0xdf, into: &out)
            for pair in pairs {
                pair.key.encode(into: &out)
                pair.value.encode(into: &out)
            }
        case .ext(let type, let data):
            Self.header(count: data.count, fix: nil, fixLimit: 0, one: 0xc7, two: 0xc8, four: 0xc9, into: &out)
            out.append(UInt8(bitPattern: type))
            out.append(data)
        }
    }

    private static func encode(_ value: Int64, into out: inout Data) {
        switch value {
        case 0...0x7f: out.append(UInt8(value))
        case -32..<0: out.append(UInt8(bitPattern: Int8(value)))
        case Int64(Int32.min)...Int64(Int32.max):
            out.append(0xd2)
            append(UInt64(UInt32(bitPattern: Int32(value))), bytes: 4, to: &out)
        default:
            out.append(0xd3)
            append(UInt64(bitPattern: value), bytes: 8, to: &out)
        }
    }

    private static func header(
        count: Int, fix: UInt8?, fixLimit: Int, one: UInt8?, two: UInt8, four: UInt8, into out: inout Data
    ) {
        if let fix, count < fixLimit {
            out.append(fix | UInt8(count))
        } else if let one, count <= 0xff {
            out.append(one)
            out.append(UInt8(count))
        } else if count <= 0xffff {
            out.append(two)
            append(UInt64(count), bytes: 2, to: &out)
        } else {
            out.append(four)
            append(UInt64(count), bytes: 4, to: &out)
        }
    }

    private static func append(_ value: UInt64, bytes: Int, to out: inout Data) {
        for shift in stride(from: (bytes - 1) * 8, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: value >> shift))
        }
    }

    // MARK: Decoding

    public struct DecodingError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Decodes exactly one value filling `data`.
    public static func decode(_ data: Data, maxDepth: Int = 32) throws -> MessagePackValue {
        var reader = Reader(bytes: [UInt8](data), maxDepth: maxDepth)
        let value = try reader.value(depth: 0)
        guard reader.offset == reader.bytes.count else {
            throw DecodingError(description: "\(reader.bytes.count - reader.offset) bytes after the value")
        }
        return value
    }

    private struct Reader {
        let bytes: [UInt8]
        let maxDepth: Int
        var offset = 0

        mutating func value(depth: Int) throws -> MessagePackValue {
            guard depth <= maxDepth else { throw failure("nested deeper than \(maxDepth)") }
            let start = offset
            let marker = try byte()
            switch marker {
            case 0x00...0x7f: return .int(Int64(marker))
            case 0xe0...0xff: return .int(Int64(Int8(bitPattern: marker)))
            case 0x80...0x8f: return try map(count: Int(marker & 0x0f), depth: depth)
            case 0x90...0x9f: return try array(count: Int(marker & 0x0f), depth: depth)
            case 0xa0...0xbf: return try string(count: Int(marker & 0x1f), at: start)
            case 0xc0: return .null
            case 0xc2: return .bool(false)
            case 0xc3: return .bool(true)
            case 0xc4, 0xc5, 0xc6: return .binary(Data(try take(try length(marker - 0xc4))))
            case 0xc7, 0xc8, 0xc9:
                let count = try length(marker - 0xc7)
                let type = Int8(bitPattern: try byte())
                return .ext(type: type, data: Data(try take(count)))
            case 0xca: return .double(Double(Float(bitPattern: UInt32(try unsigned(4)))))
            case 0xcb: return .double(Double(bitPattern: try unsigned(8)))
            case 0xcc, 0xcd, 0xce:
                return .int(Int64(try unsigned(1 << Int(marker - 0xcc))))
            case 0xcf:
                let value = try unsigned(8)
                guard value <= UInt64(Int64.max) else { throw failure("an integer beyond Int64", at: start) }
                return .int(Int64(value))
            case 0xd0: return .int(Int64(Int8(truncatingIfNeeded: try unsigned(1))))
            case 0xd1: return .int(Int64(Int16(truncatingIfNeeded: try unsigned(2))))
            case 0xd2: return .int(Int64(Int32(truncatingIfNeeded: try unsigned(4))))
            case 0xd3: return .int(Int64(bitPattern: try unsigned(8)))
            case 0xd4...0xd8:
                let type = Int8(bitPattern: try byte())
                return .ext(type: type, data: Data(try take(1 << Int(marker - 0xd4))))
            case 0xd9, 0xda, 0xdb: return try string(count: try length(marker - 0xd9), at: start)
            case 0xdc, 0xdd: return try array(count: try length(marker - 0xdc + 1), depth: depth)
            case 0xde, 0xdf: return try map(count: try length(marker - 0xde + 1), depth: depth)
            default: throw failure("the unused marker 0x\(String(marker, radix: 16))", at: start)
            }
        }

        /// A length of 1, 2 or 4 bytes (`size` 0, 1, 2).
        mutating func length(_ size: UInt8) throws -> Int { Int(try unsigned(1 << Int(size))) }

        mutating func unsigned(_ count: Int) throws -> UInt64 {
            try take(count).reduce(0) { $0 << 8 | UInt64($1) }
        }

        mutating func byte() throws -> UInt8 {
            guard offset < bytes.count else { throw failure("1 byte needed, none left") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count <= bytes.count - offset else {
                throw failure("\(count) bytes needed, \(bytes.count - offset) left")
            }
            defer { offset += count }
            return bytes[offset..<offset + count]
        }

        mutating func string(count: Int, at start: Int) throws -> MessagePackValue {
            guard let text = String(validating: try take(count), as: UTF8.self) else {
                throw failure("a string that is not UTF-8", at: start)
            }
            return .string(text)
        }

        mutating func array(count: Int, depth: Int) throws -> MessagePackValue {
            // Every element takes at least one byte: a count beyond the bytes left is a lie.
            guard count <= bytes.count - offset else { throw failure("an array of \(count) in fewer bytes") }
            var values: [MessagePackValue] = []
            values.reserveCapacity(count)
            for _ in 0..<count { values.append(try value(depth: depth + 1)) }
            return .array(values)
        }

        mutating func map(count: Int, depth: Int) throws -> MessagePackValue {
            guard count <= (bytes.count - offset) / 2 else { throw failure("a map of \(count) in fewer bytes") }
            var pairs: [Pair] = []
            pairs.reserveCapacity(count)
            for _ in 0..<count {
                let key = try value(depth: depth + 1)
                pairs.append(Pair(key, try value(depth: depth + 1)))
            }
            return .map(pairs)
        }

        func failure(_ what: String, at position: Int? = nil) -> DecodingError {
            DecodingError(description: "malformed MessagePack at byte \(position ?? offset): \(what)")
        }
    }
}
