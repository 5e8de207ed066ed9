//! Per-device counters, kept across resets (the host's to print, and the
//! guest's to read back through its host services).

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chains served and returned to the used ring (errors included).
    pub requests: u64,
    /// Requests refused because a buffer (or the status byte) lies in a
    /// page the guest has not shared with the host.
    pub mem_errors: u64,
    /// Malformed requests (bad header, length, sector range, order of
    /// readable and writable buffers, oversized chains) and unknown types.
    pub bad_requests: u64,
    /// Broken rings: the device went to DEVICE_NEEDS_RESET.
    pub ring_errors: u64,
    /// Register accesses the transport refused (wrong size, an offset
    /// with no register, a queue that does not exist or is not ready,
    /// queue setup while live, notifications before DRIVER_OK).
    pub bad_accesses: u64,
    /// Requests the device's host backend failed (e.g. a disk file's read
    /// or write error): the guest got an I/O error.
    pub backend_errors: u64,
}
