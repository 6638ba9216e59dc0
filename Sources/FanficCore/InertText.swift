/// Text from the wire made safe to print on a terminal or a log line: control characters
/// (newlines, escape sequences, DEL, C1) and the invisible direction overrides become visible
/// `\u{...}` escapes, so a URL or a failure reason cannot forge a line or recolour a terminal.
public enum InertText {
    public static func escape(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isUnsafe) else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            if isUnsafe(scalar) {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    static func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: true
        // Bidirectional embeddings, overrides and isolates (Trojan Source).
        case 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }
}
