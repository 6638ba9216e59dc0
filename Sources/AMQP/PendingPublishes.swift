/// Publishes awaiting the broker's confirm, in delivery-tag order. Confirms come in that order
/// (one at a time or `multiple` up to a tag), so the oldest are settled from the front without
/// moving the others: with hundreds in flight, an array's `remove(at: 0)` shifted every one of
/// them on each confirm. A confirm out of order leaves a hole, skipped when the front reaches it.
struct PendingPublishes<Element> {
    private var tags: [UInt64] = []
    private var slots: [Element?] = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Adds a publish; its tag is above every tag already here.
    mutating func append(_ element: Element, tag: UInt64) {
        precondition(tags.last.map { $0 < tag } ?? true, "publish tags only grow")
        tags.append(tag)
        slots.append(element)
        count += 1
    }

    /// Removes and returns every publish up to `tag`, oldest first.
    mutating func removeAll(through tag: UInt64) -> [Element] {
        var removed: [Element] = []
        while head < tags.count, tags[head] <= tag {
            if let element = slots[head] {
                removed.append(element)
                count -= 1
            }
            slots[head] = nil
            head += 1
        }
        compact()
        return removed
    }

    /// Removes and returns the publish with `tag`, if it is here.
    mutating func remove(tag: UInt64) -> Element? {
        guard let index = index(of: tag), let element = slots[index] else { return nil }
        slots[index] = nil
        count -= 1
        if index == head {
            while head < slots.count, slots[head] == nil { head += 1 }
        }
        compact()
        return element
    }

    /// Changes the publish with `tag` in place; false when it is not here.
    @discardableResult
    mutating func update(tag: UInt64, _ change: (inout Element) -> Void) -> Bool {
        guard let index = index(of: tag), slots[index] != nil else { return false }
        change(&slots[index]!)
        return true
    }

    /// Removes and returns them all, oldest first.
    mutating func removeAll() -> [Element] {
        let all = slots[head...].compactMap { $0 }
        self = PendingPublishes()
        return all
    }

    /// Binary search among the live tags (sorted: they only grow).
    private func index(of tag: UInt64) -> Int? {
        var low = head
        var high = tags.count
        while low < high {
            let middle = (low + high) / 2
            if tags[middle] < tag { low = middle + 1 } else { high = middle }
        }
        return low < tags.count && tags[low] == tag ? low : nil
    }

    /// Drops the settled front once it is most of the storage: amortized O(1) per publish.
    private mutating func compact() {
        if head == tags.count {
            tags.removeAll(keepingCapacity: true)
            slots.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64, head * 2 > tags.count {
            tags.removeFirst(head)
            slots.removeFirst(head)
            head = 0
        }
    }
}
