//! Access control shared by every API: roles, the permissions they grant, and
//! bearer tokens. A token is `mbt_<id>_<secret>`; only its SHA-256 is stored, so
//! a leaked database does not leak usable tokens. Tokens are 256-bit random
//! values, so a plain hash (no slow KDF) is enough to make them unguessable.
//!
//! Roles are additive and orthogonal (as in Kubernetes RBAC): `viewer` reads,
//! `producer` submits data, `approver` signs promotions, `operator` rolls back,
//! `admin` does everything. Each platform service that calls the registry has
//! its own role and token holding only what it needs (`ingest-service`,
//! `features-service`, `trainer-service`, `serving-service`, see
//! [`ServiceIdentity`]), so a leaked serving token can only introspect tokens
//! and a leaked features token only read specs. A person who submits batches
//! and follows their runs holds `producer,viewer`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::Sha256Digest;

/// A role a token or an approver can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads datasets, runs, models, reports, the audit log.
    Viewer,
    /// Applies dataset specs and submits batches.
    Producer,
    /// Signs and submits approvals and rejections (and reads, to see what they sign).
    Approver,
    /// Rolls deployments back (and reads).
    Operator,
    /// Everything, including tokens and the approver roster.
    Admin,
    /// The ingest service: reads specs, creates pipeline runs, checks
    /// producers' tokens.
    #[serde(rename = "ingest-service")]
    IngestService,
    /// The features service: reads specs.
    #[serde(rename = "features-service")]
    FeaturesService,
    /// The trainer: reads specs and models (the champion), registers model
    /// versions.
    #[serde(rename = "trainer-service")]
    TrainerService,
    /// Serving: checks its clients' tokens, nothing else.
    #[serde(rename = "serving-service")]
    ServingService,
    /// The monitor: reads models and runs (the served version's reference).
    #[serde(rename = "monitor-service")]
    MonitorService,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 10] = [
        Role::Viewer,
        Role::Producer,
        Role::Approver,
        Role::Operator,
        Role::Admin,
        Role::IngestService,
        Role::FeaturesService,
        Role::TrainerService,
        Role::ServingService,
        Role::MonitorService,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Producer => "producer",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::IngestService => "ingest-service",
            Role::FeaturesService => "features-service",
            Role::TrainerService => "trainer-service",
            Role::ServingService => "serving-service",
            Role::MonitorService => "monitor-service",
        }
    }

    /// Whether holding this role grants `p`.
    pub fn grants(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Viewer => matches!(p, Read | ReadSpecs),
            Role::Producer => matches!(p, ApplySpec | Submit),
            Role::Approver => matches!(p, Read | ReadSpecs | Approve),
            Role::Operator => matches!(p, Read | ReadSpecs | Rollback),
            Role::IngestService => matches!(p, ReadSpecs | WriteRuns | Introspect),
            Role::FeaturesService => matches!(p, ReadSpecs),
            Role::TrainerService => matches!(p, Read | ReadSpecs | RegisterModels),
            Role::ServingService => matches!(p, Introspect),
            Role::MonitorService => matches!(p, Read | ReadSpecs),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role {0:?} (expected one of viewer, producer, approver, operator, admin, \
     ingest-service, features-service, trainer-service, serving-service, monitor-service)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// Parses `viewer,producer` into roles, refusing unknown and empty lists.
pub fn parse_roles(s: &str) -> Result<Vec<Role>, UnknownRole> {
    let mut out: Vec<Role> = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let r: Role = part.parse()?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        return Err(UnknownRole(s.to_string()));
    }
    out.sort();
    Ok(out)
}

/// What an API operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read runs, models, reports, deployments, the audit log.
    Read,
    /// Read dataset specs (services need them without general read access).
    ReadSpecs,
    /// Apply a dataset spec.
    ApplySpec,
    /// Submit a data batch.
    Submit,
    /// Submit a signed approval or rejection.
    Approve,
    /// Submit a signed rollback.
    Rollback,
    /// Manage tokens and the approver roster.
    Admin,
    /// Create pipeline runs (ingest).
    WriteRuns,
    /// Register model versions (the trainer).
    RegisterModels,
    /// Ask who another token belongs to (ingest checks producers' tokens this way).
    Introspect,
}

impl Permission {
    /// Name used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ReadSpecs => "read specs",
            Permission::ApplySpec => "apply specs",
            Permission::Submit => "submit batches",
            Permission::Approve => "approve",
            Permission::Rollback => "roll back",
            Permission::Admin => "administer",
            Permission::WriteRuns => "create pipeline runs",
            Permission::RegisterModels => "register model versions",
            Permission::Introspect => "introspect tokens",
        }
    }

    /// Roles that grant it, for error messages.
    pub fn granted_by(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.grants(self)).collect()
    }
}

/// A platform service that calls the registry with a token of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceIdentity {
    /// `modelbus ingest`.
    Ingest,
    /// `modelbus features`.
    Features,
    /// `modelbus trainer`.
    Trainer,
    /// `modelbus serving`.
    Serving,
    /// `modelbus monitor`.
    Monitor,
}

impl ServiceIdentity {
    /// Every service that holds a token.
    pub const ALL: [ServiceIdentity; 5] = [
        ServiceIdentity::Ingest,
        ServiceIdentity::Features,
        ServiceIdentity::Trainer,
        ServiceIdentity::Serving,
        ServiceIdentity::Monitor,
    ];

    /// The service's name (`ingest`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ServiceIdentity::Ingest => "ingest",
            ServiceIdentity::Features => "features",
            ServiceIdentity::Trainer => "trainer",
            ServiceIdentity::Serving => "serving",
            ServiceIdentity::Monitor => "monitor",
        }
    }

    /// The principal its token belongs to (`modelbus-ingest`, ...).
    pub fn principal(self) -> String {
        format!("modelbus-{}", self.name())
    }

    /// The one role its token holds.
    pub fn role(self) -> Role {
        match self {
            ServiceIdentity::Ingest => Role::IngestService,
            ServiceIdentity::Features => Role::FeaturesService,
            ServiceIdentity::Trainer => Role::TrainerService,
            ServiceIdentity::Serving => Role::ServingService,
            ServiceIdentity::Monitor => Role::MonitorService,
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Name (also the approver id of a person).
    pub name: String,
    /// Roles held.
    pub roles: Vec<Role>,
    /// Id of the token used.
    pub token_id: String,
}

impl Principal {
    /// Whether any held role grants `p`.
    pub fn can(&self, p: Permission) -> bool {
        self.roles.iter().any(|r| r.grants(p))
    }

    /// `Ok` if allowed, else the message of a 403.
    pub fn require(&self, p: Permission) -> Result<(), String> {
        if self.can(p) {
            return Ok(());
        }
        let held: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        let needed: Vec<&str> = p.granted_by().iter().map(|r| r.as_str()).collect();
        Err(format!(
            "{} (roles {}) may not {}: that needs one of the roles {}",
            self.name,
            held.join(","),
            p.as_str(),
            needed.join(", ")
        ))
    }
}

/// Valid principal and token names: 1-64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?} must be 1-64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(format!(
            "name {name:?} may hold only letters, digits, '.', '_', '-' and '@'"
        ));
    }
    Ok(())
}

/// A freshly minted token: the secret is shown once.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Public id (stored, shown in listings).
    pub id: String,
    /// The bearer token itself.
    pub token: String,
    /// What the store keeps.
    pub sha256: String,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("no randomness available for a token: {0}")]
pub struct TokenError(String);

/// Mints a new random token.
pub fn mint_token() -> Result<NewToken, TokenError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| TokenError(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| TokenError(e.to_string()))?;
    let id = hex::encode(id);
    let token = format!("mbt_{id}_{}", hex::encode(secret));
    let sha256 = token_sha256(&token);
    Ok(NewToken { id, token, sha256 })
}

/// What the store keeps of a token.
pub fn token_sha256(token: &str) -> String {
    Sha256Digest::of(token.trim().as_bytes()).to_hex()
}

/// The public id inside a token, if it has the right shape.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.trim().strip_prefix("mbt_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && secret.len() == 64).then_some(id)
}

/// The token in an `Authorization: Bearer ...` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Prefix of a submitter named only by a `data.batch.submitted` event on the
/// bus (a producer that put the object itself): nobody authenticated that
/// name. The production policy still refuses that name's approval.
pub const UNVERIFIED_PREFIX: &str = "unverified:";

/// How a run records the submitter a bus event claims: marked unverified and
/// cut to 128 characters. Ingest's and the registry's consumers both create
/// such runs; whichever is first, the name is the same.
pub fn claimed_submitter(name: &str) -> String {
    format!(
        "{UNVERIFIED_PREFIX}{}",
        name.chars().take(128).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_refuse_unknown_ones() {
        assert_eq!(
            parse_roles("viewer, producer,viewer").unwrap(),
            vec![Role::Viewer, Role::Producer]
        );
        assert!(
            parse_roles("root")
                .unwrap_err()
                .to_string()
                .contains("root")
        );
        assert!(parse_roles("").is_err());
    }

    #[test]
    fn each_permission_is_granted_and_withheld_by_some_role() {
        for p in [
            Permission::Read,
            Permission::ApplySpec,
            Permission::Submit,
            Permission::Approve,
            Permission::Rollback,
            Permission::Admin,
            Permission::WriteRuns,
            Permission::RegisterModels,
            Permission::Introspect,
        ] {
            assert!(Role::Admin.grants(p));
            assert!(
                Role::ALL.iter().any(|r| !r.grants(p)),
                "{p:?} is granted by every role, so no 403 can be tested"
            );
        }
        assert!(!Role::Producer.grants(Permission::Read));
        assert!(!Role::Viewer.grants(Permission::Submit));
        assert!(!Role::Approver.grants(Permission::Rollback));
        assert!(!Role::Operator.grants(Permission::Approve));
    }

    #[test]
    fn each_service_holds_only_what_it_calls() {
        use Permission::*;
        let all = [
            Read,
            ReadSpecs,
            ApplySpec,
            Submit,
            Approve,
            Rollback,
            Admin,
            WriteRuns,
            RegisterModels,
            Introspect,
        ];
        let granted = |s: ServiceIdentity| -> Vec<Permission> {
            all.into_iter().filter(|p| s.role().grants(*p)).collect()
        };
        assert_eq!(
            granted(ServiceIdentity::Ingest),
            vec![ReadSpecs, WriteRuns, Introspect]
        );
        assert_eq!(granted(ServiceIdentity::Features), vec![ReadSpecs]);
        assert_eq!(
            granted(ServiceIdentity::Trainer),
            vec![Read, ReadSpecs, RegisterModels]
        );
        assert_eq!(granted(ServiceIdentity::Serving), vec![Introspect]);
        assert_eq!(granted(ServiceIdentity::Monitor), vec![Read, ReadSpecs]);
        for s in ServiceIdentity::ALL {
            assert_eq!(s.role().as_str().parse::<Role>().unwrap(), s.role());
            let json = serde_json::to_string(&s.role()).unwrap();
            assert_eq!(json, format!("\"{}\"", s.role().as_str()));
        }
    }

    #[test]
    fn a_principal_is_told_which_role_it_lacks() {
        let p = Principal {
            name: "pat".into(),
            roles: vec![Role::Producer],
            token_id: "x".into(),
        };
        assert!(p.require(Permission::Submit).is_ok());
        let e = p.require(Permission::Read).unwrap_err();
        assert!(e.contains("pat") && e.contains("viewer"), "{e}");
    }

    #[test]
    fn tokens_have_an_id_and_hash_stably() {
        let t = mint_token().unwrap();
        assert_eq!(token_id(&t.token), Some(t.id.as_str()));
        assert_eq!(token_sha256(&t.token), t.sha256);
        assert_ne!(mint_token().unwrap().token, t.token);
        assert_eq!(token_id("mbt_short_x"), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice@example.com").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
    }
}
