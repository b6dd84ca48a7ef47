//! What a watched file is (its category), and what a violation of it means (the action).

use serde::{Deserialize, Serialize};

/// Watch categories; each maps to one fixed [`Action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Service executables.
    ServiceBinary,
    /// Policy and configuration files.
    PolicyFile,
    /// Every file under a model directory.
    ModelFile,
    /// systemd unit files.
    SystemdUnit,
    /// Trust anchors such as cosign.pub.
    TrustMaterial,
}

impl Category {
    /// What a violation in this category means for the appliance.
    pub fn action(self) -> Action {
        match self {
            Category::PolicyFile => Action::ReloadPolicy,
            Category::ModelFile => Action::QuarantineModel,
            Category::ServiceBinary | Category::SystemdUnit | Category::TrustMaterial => {
                Action::DegradeAppliance
            }
        }
    }

    /// The snake_case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::ServiceBinary => "service_binary",
            Category::PolicyFile => "policy_file",
            Category::ModelFile => "model_file",
            Category::SystemdUnit => "systemd_unit",
            Category::TrustMaterial => "trust_material",
        }
    }
}

/// Per-category consequence of a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The appliance as a whole is no longer trustworthy.
    DegradeAppliance,
    /// The policy changed under the services: they must reload it.
    ReloadPolicy,
    /// The model must be moved out of service.
    QuarantineModel,
}
