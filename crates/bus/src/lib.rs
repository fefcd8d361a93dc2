//! The message bus seam: the Bus trait, MemoryBus, channel-to-subject encoding, payloads.
