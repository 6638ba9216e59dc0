import Testing

@testable import FanficCore

@Suite("Text from the wire printed inert")
struct InertTextTests {
    @Test("newlines, escape sequences, DEL, C1 and direction overrides become visible escapes")
    func escapes() {
        #expect(InertText.escape("http://test1.com?sid=1") == "http://test1.com?sid=1")
        #expect(InertText.escape("a\nFAKE LOG LINE") == "a\\u{a}FAKE LOG LINE")
        #expect(InertText.escape("\u{1B}[31mred\u{7F}\u{85}") == "\\u{1b}[31mred\\u{7f}\\u{85}")
        #expect(InertText.escape("abc\u{202E}fdp.exe") == "abc\\u{202e}fdp.exe")
        #expect(InertText.escape("émoji 📚 stay") == "émoji 📚 stay")
    }
}
