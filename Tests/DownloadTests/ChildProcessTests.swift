import TestSupport
import Testing

/// The test helper that runs programs: a program that does not exit fails its test by name
/// instead of hanging the whole run.
@Suite("Programs a test runs")
struct ChildProcessTests {
    @Test("a program past its time limit is killed, and the error names it")
    func pastItsLimit() throws {
        let error = #expect(throws: ChildProcessError.self) {
            try ChildProcess.run(["/bin/sleep", "600"], timeout: .milliseconds(200))
        }
        #expect(error?.description.hasPrefix("/bin/sleep 600 did not exit within") == true)
    }

    @Test("a program within its limit gives its status and output")
    func withinItsLimit() throws {
        let result = try ChildProcess.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(result.status == 3)
        #expect(result.stdout == "out\n")
        #expect(result.stderr == "err\n")
    }
}
