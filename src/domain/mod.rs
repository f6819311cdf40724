//! The project's own types, parsed once at the edge: emails, roster rows and the invitations
//! they ask for, ledger entries; the membership roster and its ledger.

mod email;
mod invitation;
mod invitee;
mod ledger;
mod membership;

pub use email::{Email, EmailError};
pub use invitation::{CreateInvitation, TemplateSlug};
pub use invitee::{
    roster_key, row_address, DesiredInvitee, DesiredRow, InvalidRow, RowDefaults,
    MAX_METADATA_BYTES,
};
pub use ledger::{AcceptedEntry, LedgerEntry, LedgerState, Person};
pub use membership::{
    check_organization, check_role, is_organization_id, membership_key, DesiredMembership,
    InvalidMembership, KnownOrganization, MembershipKind, MembershipLedgerEntry,
    MembershipRosterRow, MembershipRow, MembershipState, ROLE_PREFIX,
};
