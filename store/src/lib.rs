//! DiffKeeper's recording store: a container's file-system history in one
//! redb file.
//!
//! - Write side: [`Recorder`] appends [`Event`]s, storing each file version
//!   content-addressed ([`ContentRef`]) with the cheapest honest encoding
//!   (append tail, zstd/bsdiff patch, content-defined chunks, or whole).
//! - Read side: [`Recording`] answers `timeline`, `state_at`, `cat`, `diff`,
//!   `export`, `restore_into` and `verify`, on finished, crashed or
//!   still-running recordings.
//! - Shared vocabulary: [`RecPath`], [`TimeSpec`]/[`Moment`], [`FsState`].
//!
//! The byte layout is in [`format`] and `docs/recording-format.md`.

mod content;
mod error;
mod event;
mod export;
pub mod format;
mod meta;
mod path;
mod recorder;
mod recording;
mod state;
mod time;
mod verify;

pub use content::{
    content_id, ContentId, ContentRef, EncodingPolicy, EncodingStats, PatchEngine, SpeedSwitch,
};
pub use error::{Error, Result};
pub use event::{lost_events, Actor, Event, Op, OpKind};
pub use export::{ExportOptions, ExportProgress, ExportReport, RestoreReport};
pub use meta::{
    BaselineMode, BaselineStatus, Capture, KubernetesIdentity, RecordingMeta, RecordingState,
    Status, Subject,
};
pub use path::{PathGlobs, RecPath, MAX_PATH_LEN};
pub use recorder::{monotonic_now_ns, unix_now_ns, Recorder, RecorderOptions};
pub use recording::{diff_states, Change, Recording, Snapshot, TimelineFilter};
pub use state::{FsState, Node, NodeKind, DEFAULT_FILE_MODE};
pub use time::{format_offset, Moment, TimeSpec};
pub use verify::{Problem, VerifyReport};
