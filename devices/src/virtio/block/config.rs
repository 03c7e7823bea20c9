/// Configuration of one virtio-blk device. Every field comes from the
/// resolved machine type's property values (after `-global`/`-device`
/// overrides); there is deliberately no `Default`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Real queues (`num-queues`; `auto` already resolved to the vCPU count).
    pub num_queues: u16,
    /// Maximum size of each queue (`queue-size`).
    pub queue_size: u16,
    /// Offer `VIRTIO_BLK_F_DISCARD` (`discard`).
    pub discard: bool,
    /// Offer `VIRTIO_BLK_F_WRITE_ZEROES` (`write-zeroes`).
    pub write_zeroes: bool,
    /// Offer `VIRTIO_BLK_F_CONFIG_WCE` (`config-wce`).
    pub config_wce: bool,
    /// Report the discard granularity in the config space (`report-discard-granularity`).
    pub report_discard_granularity: bool,
    /// `seg-max-adjust`: `seg_max` is `queue-size - 2` (on) or the legacy 126 (off).
    pub seg_max_adjust: bool,
    /// Offer `VIRTIO_F_RING_RESET` (`queue_reset`).
    pub queue_reset: bool,
    /// Offer `VIRTIO_RING_F_EVENT_IDX` (`event_idx`).
    pub event_idx: bool,
    /// Offer `VIRTIO_RING_F_INDIRECT_DESC` (`indirect_desc`).
    pub indirect_desc: bool,
    /// Refuse writes and offer `VIRTIO_BLK_F_RO`.
    pub read_only: bool,
    /// Answer to `VIRTIO_BLK_T_GET_ID` (`serial`; at most 20 bytes are sent).
    pub serial: Option<String>,
}
