import Foundation
import FuzzTargets
import Testing

/// Every input the fuzzers ever found (Fuzz/regressions/TARGET) and every seed, through its
/// target again: none may crash. Linear time is measured by Benchmarks/ParsingBenchmark.
@Suite("Fuzzing regressions and seeds replayed")
struct FuzzRegressionTests {
    static let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz")

    static func inputs(of target: FuzzTarget) -> [URL] {
        ["regressions", "seeds"].flatMap { folder in
            let directory = fuzz.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
            return
                ((try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? [])
                .sorted { $0.path < $1.path }
        }
    }

    @Test("each target runs its seeds and regressions", arguments: FuzzTarget.allCases)
    func replay(_ target: FuzzTarget) throws {
        let inputs = Self.inputs(of: target)
        #expect(!inputs.isEmpty, "\(target.rawValue) has seeds")
        for input in inputs { target.run(try Data(contentsOf: input)) }
    }
}
