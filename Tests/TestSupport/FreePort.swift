import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Ports for the servers a test starts. Ranges stay below the kernel's ephemeral range (32768
/// and up here), where any outgoing connection of the run may hold a port at the moment a server
/// wants it (a calibre-server that could not bind was seen to fail a test that way).
public enum FreePort {
    /// A port in `range` that nothing uses now, nor `port + offset` for each offset.
    public static func pick(in range: ClosedRange<Int>, alsoFree offsets: [Int] = []) -> Int {
        for _ in 0..<500 {
            let port = Int.random(in: range)
            if ([0] + offsets).allSatisfy({ isFree(port + $0) }) { return port }
        }
        return Int.random(in: range)
    }

    static func isFree(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
