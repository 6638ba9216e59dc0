import Foundation
import FuzzTargets

// libFuzzer's entry point: one input to the target FANFIC_FUZZ_TARGET names (see
// scripts/fuzz.sh, which builds this with -sanitize=fuzzer and -DFUZZING).
private let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["FANFIC_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("set FANFIC_FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    target.run(bytes.map { Data(bytes: $0, count: count) } ?? Data())
    return 0
}

#if !FUZZING
    /// Without libFuzzer: runs each file given on the command line through the target (how a
    /// crash found by the fuzzer is replayed).
    @main
    enum FuzzReplay {
        static func main() {
            for path in CommandLine.arguments.dropFirst() {
                guard let data = FileManager.default.contents(atPath: path) else {
                    FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
                    exit(1)
                }
                _ = fuzzOneInput(Array(data), data.count)
                print("ok \(path)")
            }
        }
    }
#endif
