import CRabbitMQ
import Foundation

/// Owns the C memory handed to one rabbitmq-c call (strings, tables, properties), so that
/// every pointer outlives the call and is freed after it.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { free(pointer) }
    }

    func allocate(bytes count: Int) -> UnsafeMutableRawPointer {
        let pointer = malloc(max(count, 1))!
        allocations.append(pointer)
        return pointer
    }

    func bytes(_ string: String) -> amqp_bytes_t {
        var utf8 = Array(string.utf8)
        utf8.append(0)  // keep a terminator: some rabbitmq-c paths read C strings
        let pointer = allocate(bytes: utf8.count)
        utf8.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return amqp_bytes_t(len: utf8.count - 1, bytes: pointer)
    }

    func bytes(_ data: Data) -> amqp_bytes_t {
        let pointer = allocate(bytes: data.count)
        data.withUnsafeBytes { raw in
            if let base = raw.baseAddress { pointer.copyMemory(from: base, byteCount: raw.count) }
        }
        return amqp_bytes_t(len: data.count, bytes: pointer)
    }

    /// A NUL-terminated copy for the APIs that take `const char *`.
    func cString(_ string: String) -> UnsafePointer<CChar> {
        let bytes = self.bytes(string)
        return UnsafePointer(bytes.bytes!.assumingMemoryBound(to: CChar.self))
    }

    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(bytes: MemoryLayout<amqp_table_entry_t>.stride * table.count)
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        for (index, key) in table.keys.sorted().enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(key), value: fieldValue(table[key]!))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func fieldValue(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .bool(let flag):
            field.kind = kind(AMQP_FIELD_KIND_BOOLEAN)
            field.value.boolean = flag ? 1 : 0
        case .int(let number):
            field.kind = kind(AMQP_FIELD_KIND_I64)
            field.value.i64 = number
        case .double(let number):
            field.kind = kind(AMQP_FIELD_KIND_F64)
            field.value.f64 = number
        case .string(let text):
            field.kind = kind(AMQP_FIELD_KIND_UTF8)
            field.value.bytes = bytes(text)
        case .bytes(let data):
            field.kind = kind(AMQP_FIELD_KIND_BYTES)
            field.value.bytes = bytes(data)
        case .timestamp(let seconds):
            field.kind = kind(AMQP_FIELD_KIND_TIMESTAMP)
            field.value.u64 = seconds
        case .array(let values):
            field.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let entries = allocate(bytes: MemoryLayout<amqp_field_value_t>.stride * max(values.count, 1))
                .bindMemory(to: amqp_field_value_t.self, capacity: max(values.count, 1))
            for (index, element) in values.enumerated() { entries[index] = fieldValue(element) }
            field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: entries)
        case .table(let nested):
            field.kind = kind(AMQP_FIELD_KIND_TABLE)
            field.value.table = table(nested)
        case .void:
            field.kind = kind(AMQP_FIELD_KIND_VOID)
        }
        return field
    }

    func properties(_ properties: AMQPMessageProperties) -> amqp_basic_properties_t {
        var result = amqp_basic_properties_t()
        var flags: UInt32 = 0
        func set(_ value: String?, _ flag: UInt16, _ assign: (amqp_bytes_t) -> Void) {
            guard let value else { return }
            assign(bytes(value))
            flags |= UInt32(flag)
        }
        set(properties.contentType, fanfic_amqp_basic_content_type_flag) { result.content_type = $0 }
        set(properties.contentEncoding, fanfic_amqp_basic_content_encoding_flag) { result.content_encoding = $0 }
        set(properties.correlationID, fanfic_amqp_basic_correlation_id_flag) { result.correlation_id = $0 }
        set(properties.replyTo, fanfic_amqp_basic_reply_to_flag) { result.reply_to = $0 }
        set(properties.expiration, fanfic_amqp_basic_expiration_flag) { result.expiration = $0 }
        set(properties.messageID, fanfic_amqp_basic_message_id_flag) { result.message_id = $0 }
        set(properties.type, fanfic_amqp_basic_type_flag) { result.type = $0 }
        set(properties.appID, fanfic_amqp_basic_app_id_flag) { result.app_id = $0 }
        set(properties.userID, fanfic_amqp_basic_user_id_flag) { result.user_id = $0 }
        if !properties.headers.isEmpty {
            result.headers = table(properties.headers)
            flags |= UInt32(fanfic_amqp_basic_headers_flag)
        }
        if let mode = properties.deliveryMode {
            result.delivery_mode = mode
            flags |= UInt32(fanfic_amqp_basic_delivery_mode_flag)
        }
        if let priority = properties.priority {
            result.priority = priority
            flags |= UInt32(fanfic_amqp_basic_priority_flag)
        }
        if let timestamp = properties.timestamp {
            result.timestamp = timestamp
            flags |= UInt32(fanfic_amqp_basic_timestamp_flag)
        }
        result._flags = flags
        return result
    }

    private func kind(_ kind: amqp_field_value_kind_t) -> UInt8 { UInt8(kind.rawValue) }
}

// MARK: Decoding what rabbitmq-c hands back

extension String {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard let base = bytes.bytes, bytes.len > 0 else {
            self = ""
            return
        }
        self = String(decoding: UnsafeRawBufferPointer(start: base, count: bytes.len), as: UTF8.self)
    }
}

extension Data {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard let base = bytes.bytes, bytes.len > 0 else {
            self = Data()
            return
        }
        self = Data(bytes: base, count: bytes.len)
    }
}

enum CDecoding {
    static func table(_ table: amqp_table_t) -> AMQPTable {
        var result: AMQPTable = [:]
        guard let entries = table.entries else { return result }
        for index in 0..<Int(table.num_entries) {
            let entry = entries[index]
            result[String(amqpBytes: entry.key)] = fieldValue(entry.value)
        }
        return result
    }

    static func fieldValue(_ field: amqp_field_value_t) -> AMQPFieldValue {
        let value = field.value
        switch UInt32(field.kind) {
        case AMQP_FIELD_KIND_BOOLEAN.rawValue: return .bool(value.boolean != 0)
        case AMQP_FIELD_KIND_I8.rawValue: return .int(Int64(value.i8))
        case AMQP_FIELD_KIND_U8.rawValue: return .int(Int64(value.u8))
        case AMQP_FIELD_KIND_I16.rawValue: return .int(Int64(value.i16))
        case AMQP_FIELD_KIND_U16.rawValue: return .int(Int64(value.u16))
        case AMQP_FIELD_KIND_I32.rawValue: return .int(Int64(value.i32))
        case AMQP_FIELD_KIND_U32.rawValue: return .int(Int64(value.u32))
        case AMQP_FIELD_KIND_I64.rawValue: return .int(value.i64)
        case AMQP_FIELD_KIND_U64.rawValue: return .int(Int64(truncatingIfNeeded: value.u64))
        case AMQP_FIELD_KIND_F32.rawValue: return .double(Double(value.f32))
        case AMQP_FIELD_KIND_F64.rawValue: return .double(value.f64)
        case AMQP_FIELD_KIND_DECIMAL.rawValue:
            return .double(Double(value.decimal.value) / pow(10, Double(value.decimal.decimals)))
        case AMQP_FIELD_KIND_UTF8.rawValue: return .string(String(amqpBytes: value.bytes))
        case AMQP_FIELD_KIND_BYTES.rawValue: return .bytes(Data(amqpBytes: value.bytes))
        case AMQP_FIELD_KIND_TIMESTAMP.rawValue: return .timestamp(value.u64)
        case AMQP_FIELD_KIND_TABLE.rawValue: return .table(table(value.table))
        case AMQP_FIELD_KIND_ARRAY.rawValue:
            guard let entries = value.array.entries else { return .array([]) }
            return .array((0..<Int(value.array.num_entries)).map { fieldValue(entries[$0]) })
        default: return .void
        }
    }

    static func properties(_ raw: amqp_basic_properties_t) -> AMQPMessageProperties {
        let flags = raw._flags
        func has(_ flag: UInt16) -> Bool { flags & UInt32(flag) != 0 }
        func text(_ flag: UInt16, _ bytes: amqp_bytes_t) -> String? { has(flag) ? String(amqpBytes: bytes) : nil }
        return AMQPMessageProperties(
            contentType: text(fanfic_amqp_basic_content_type_flag, raw.content_type),
            contentEncoding: text(fanfic_amqp_basic_content_encoding_flag, raw.content_encoding),
            headers: has(fanfic_amqp_basic_headers_flag) ? table(raw.headers) : [:],
            deliveryMode: has(fanfic_amqp_basic_delivery_mode_flag) ? raw.delivery_mode : nil,
            priority: has(fanfic_amqp_basic_priority_flag) ? raw.priority : nil,
            correlationID: text(fanfic_amqp_basic_correlation_id_flag, raw.correlation_id),
            replyTo: text(fanfic_amqp_basic_reply_to_flag, raw.reply_to),
            expiration: text(fanfic_amqp_basic_expiration_flag, raw.expiration),
            messageID: text(fanfic_amqp_basic_message_id_flag, raw.message_id),
            timestamp: has(fanfic_amqp_basic_timestamp_flag) ? raw.timestamp : nil,
            type: text(fanfic_amqp_basic_type_flag, raw.type),
            appID: text(fanfic_amqp_basic_app_id_flag, raw.app_id),
            userID: text(fanfic_amqp_basic_user_id_flag, raw.user_id)
        )
    }
}
