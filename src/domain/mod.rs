//! The project's own types, parsed once at the edge: emails, roster rows and the invitations
//! they ask for, ledger entries.

mod email;
mod invitation;
mod invitee;
mod ledger;

pub use email::{Email, EmailError};
pub use invitation::{CreateInvitation, TemplateSlug};
pub use invitee::{
    roster_key, row_address, DesiredInvitee, DesiredRow, InvalidRow, RowDefaults,
    MAX_METADATA_BYTES,
};
pub use ledger::{LedgerEntry, LedgerState, Person};
