//! The resource schemas this server really implements (RFC 7643 §4, §7, §8.7).
//!
//! One static description per resource type ([`ResourceType`]: its schemas and its own check)
//! drives input normalisation, PATCH, rendering, filters and discovery (`/ResourceTypes`,
//! `/Schemas`), so what discovery advertises is what the server does.

use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::user_name::UserName;

pub(crate) const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(crate) const MFA_USER: &str = "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User";
pub(crate) const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub(crate) const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
#[cfg(test)]
pub(crate) const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub(crate) const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub(crate) const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub(crate) const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub(crate) const SERVICE_PROVIDER_CONFIG: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// The `schemas` a request document declares (its key matched ignoring case): a non-empty list
/// of URNs, `invalidSyntax` otherwise (missing, empty, a bare string, …). RFC 7643 §3 makes it
/// required on every resource and message.
pub(crate) fn declared_schemas(doc: &Map<String, Value>) -> Result<Vec<&str>, ScimError> {
    let value = doc.get("schemas").or_else(|| doc.iter().find(|(k, _)| k.eq_ignore_ascii_case("schemas")).map(|(_, v)| v));
    let list = match value {
        Some(Value::Array(items)) if !items.is_empty() => items.iter().map(Value::as_str).collect::<Option<Vec<_>>>(),
        _ => None,
    };
    list.ok_or_else(|| ScimError::invalid_syntax("schemas is required: a non-empty list of schema URNs"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    DateTime,
    Reference,
    Complex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
}

/// One attribute definition (RFC 7643 §7).
#[derive(Debug)]
pub struct Attribute {
    pub name: &'static str,
    pub kind: Kind,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub description: &'static str,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [Attribute],
}

/// A schema: its URN and attributes.
#[derive(Debug)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [Attribute],
}

impl Attribute {
    /// The sub-attribute called `name`, ignoring case.
    pub(crate) fn sub(&self, name: &str) -> Option<&'static Attribute> {
        find(self.sub_attributes, name)
    }

    /// Attribute names are case-insensitive on the wire (RFC 7643 §2.1).
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut out = json!({
            "name": self.name,
            "type": match self.kind {
                Kind::String => "string",
                Kind::Boolean => "boolean",
                Kind::DateTime => "dateTime",
                Kind::Reference => "reference",
                Kind::Complex => "complex",
            },
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": match self.mutability {
                Mutability::ReadOnly => "readOnly",
                Mutability::ReadWrite => "readWrite",
                Mutability::Immutable => "immutable",
                Mutability::WriteOnly => "writeOnly",
            },
            "returned": match self.returned {
                Returned::Always => "always",
                Returned::Never => "never",
                Returned::Default => "default",
                Returned::Request => "request",
            },
            "uniqueness": match self.uniqueness {
                Uniqueness::None => "none",
                Uniqueness::Server => "server",
            },
        });
        let obj = out.as_object_mut().expect("object literal");
        if !self.canonical_values.is_empty() {
            obj.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if !self.reference_types.is_empty() {
            obj.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if !self.sub_attributes.is_empty() {
            let subs: Vec<Value> = self.sub_attributes.iter().map(Attribute::to_json).collect();
            obj.insert("subAttributes".into(), Value::Array(subs));
        }
        out
    }
}

impl Schema {
    pub(crate) fn attribute(&self, name: &str) -> Option<&'static Attribute> {
        find(self.attributes, name)
    }

    /// The `/Schemas/{id}` document.
    pub(crate) fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(Attribute::to_json).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base_url}/Schemas/{}", self.id),
            }
        })
    }
}

fn find(attrs: &'static [Attribute], name: &str) -> Option<&'static Attribute> {
    attrs.iter().find(|a| a.is(name))
}

/// A resource type (RFC 7643 §6): where it lives, its core schema and extensions, and the one
/// rule of its own that the schema tables cannot say. Normalisation, PATCH, filters, rendering
/// and discovery take a resource type instead of naming the User, so another type (Groups) is
/// another static, not another code path.
#[derive(Debug)]
pub struct ResourceType {
    /// `id` and `name` in discovery, `meta.resourceType` of its resources.
    pub name: &'static str,
    pub endpoint: &'static str,
    pub description: &'static str,
    pub core: &'static Schema,
    pub extensions: &'static [&'static Schema],
    /// Checks a normalised body for what the schema table cannot say (a User's userName), as
    /// an `invalidValue` error.
    pub check: fn(&Map<String, Value>) -> Result<(), ScimError>,
}

impl ResourceType {
    /// The core schema first, then the extensions.
    pub(crate) fn schemas(&self) -> impl Iterator<Item = &'static Schema> + '_ {
        std::iter::once(self.core).chain(self.extensions.iter().copied())
    }

    /// The schema of this type with this URN (ignoring case), core or extension.
    pub(crate) fn schema(&self, urn: &str) -> Option<&'static Schema> {
        self.schemas().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// The extension with this URN (ignoring case): attributes kept in an object of their own.
    pub(crate) fn extension(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions.iter().copied().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Whether `schema` is this type's core schema: its attributes sit at the top level of a
    /// resource, next to the common ones (`id`, `externalId`, `meta`; RFC 7643 §3.1).
    pub(crate) fn is_core(&self, schema: &Schema) -> bool {
        schema.id == self.core.id
    }

    /// The `/ResourceTypes/{name}` document.
    pub(crate) fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.core.id,
            "schemaExtensions": self.extensions.iter().map(|s| json!({"schema": s.id, "required": false})).collect::<Vec<_>>(),
            "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/{}", self.name)},
        })
    }
}

/// Users: the core User schema, the enterprise extension and provisiond's MFA extension.
pub static USER_RESOURCE: ResourceType = ResourceType {
    name: "User",
    endpoint: "/Users",
    description: "User Account",
    core: &USER_SCHEMA,
    extensions: &[&ENTERPRISE_USER_SCHEMA, &MFA_USER_SCHEMA],
    check: check_user,
};

/// Groups: the core Group schema. Their `members` are stored apart from the body
/// (`store::groups`), so the body never holds them.
pub static GROUP_RESOURCE: ResourceType = ResourceType {
    name: "Group",
    endpoint: "/Groups",
    description: "Group",
    core: &GROUP_SCHEMA,
    extensions: &[],
    check: check_group,
};

/// Every resource type this server serves, as discovery lists them.
pub(crate) static RESOURCE_TYPES: [&ResourceType; 2] = [&USER_RESOURCE, &GROUP_RESOURCE];

/// The resource type called `name` (ignoring case).
pub(crate) fn resource_type(name: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.iter().copied().find(|t| t.name.eq_ignore_ascii_case(name))
}

/// The schemas of every resource type, each once (`/Schemas`).
pub(crate) fn all_schemas() -> impl Iterator<Item = &'static Schema> {
    let mut seen = Vec::new();
    RESOURCE_TYPES.iter().flat_map(|t| t.schemas()).filter(move |s| {
        let first = !seen.contains(&s.id);
        seen.push(s.id);
        first
    })
}

/// The schema with this URN (ignoring case), among those of every resource type.
pub(crate) fn any_schema(urn: &str) -> Option<&'static Schema> {
    all_schemas().find(|s| s.id.eq_ignore_ascii_case(urn))
}

/// A User's userName must pass the userName rule (`user_name::UserName`).
fn check_user(body: &Map<String, Value>) -> Result<(), ScimError> {
    let name = body.get("userName").and_then(Value::as_str).unwrap_or_default();
    UserName::check(name).map_err(|e| ScimError::invalid_value(e.to_string()))
}

/// A Group's displayName is required and not blank.
fn check_group(body: &Map<String, Value>) -> Result<(), ScimError> {
    match body.get("displayName").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() => Ok(()),
        _ => Err(ScimError::invalid_value("displayName is required")),
    }
}

// Attribute constructors keep the tables below readable: most attributes are optional,
// single-valued, readWrite, returned by default and not unique.
const fn attr(name: &'static str, kind: Kind, description: &'static str) -> Attribute {
    Attribute {
        name,
        kind,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        description,
        canonical_values: &[],
        reference_types: &[],
        sub_attributes: &[],
    }
}

const fn string(name: &'static str, description: &'static str) -> Attribute {
    attr(name, Kind::String, description)
}

const fn multi(name: &'static str, description: &'static str, subs: &'static [Attribute]) -> Attribute {
    Attribute { multi_valued: true, sub_attributes: subs, ..attr(name, Kind::Complex, description) }
}

const fn typed(description: &'static str, values: &'static [&'static str]) -> Attribute {
    Attribute { canonical_values: values, ..string("type", description) }
}

const PRIMARY: Attribute =
    attr("primary", Kind::Boolean, "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.");
const DISPLAY: Attribute = string("display", "A human-readable name, primarily used for display purposes.");

const fn plural_subs(value_description: &'static str, types: &'static [&'static str]) -> [Attribute; 4] {
    [string("value", value_description), DISPLAY, typed("A label indicating the attribute's function.", types), PRIMARY]
}

const fn read_only(a: Attribute) -> Attribute {
    Attribute { mutability: Mutability::ReadOnly, ..a }
}

const EMAIL_SUBS: [Attribute; 4] = plural_subs("Email address for the User.", &["work", "home", "other"]);
const PHONE_SUBS: [Attribute; 4] = plural_subs("Phone number of the User.", &["work", "home", "mobile", "fax", "pager", "other"]);
const IM_SUBS: [Attribute; 4] =
    plural_subs("Instant messaging address for the User.", &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]);
const PHOTO_SUBS: [Attribute; 4] = [
    Attribute { reference_types: &["external"], ..attr("value", Kind::Reference, "URL of a photo of the User.") },
    DISPLAY,
    typed("A label indicating the attribute's function.", &["photo", "thumbnail"]),
    PRIMARY,
];
const VALUE_SUBS: [Attribute; 4] = plural_subs("The value of the attribute.", &[]);
const ADDRESS_SUBS: [Attribute; 8] = [
    string("formatted", "The full mailing address, formatted for display or use with a mailing label."),
    string("streetAddress", "The full street address component."),
    string("locality", "The city or locality component."),
    string("region", "The state or region component."),
    string("postalCode", "The zip code or postal code component."),
    string("country", "The country name component."),
    typed("A label indicating the attribute's function.", &["work", "home", "other"]),
    PRIMARY,
];
const GROUP_SUBS: [Attribute; 4] = [
    read_only(string("value", "The identifier of the User's group.")),
    read_only(Attribute {
        reference_types: &["Group"],
        ..attr("$ref", Kind::Reference, "The URI of the corresponding 'Group' resource.")
    }),
    read_only(string("display", "A human-readable name, primarily used for display purposes.")),
    read_only(typed("A label indicating the attribute's function.", &["direct", "indirect"])),
];
const NAME_SUBS: [Attribute; 6] = [
    string("formatted", "The full name, including all middle names, titles, and suffixes."),
    string("familyName", "The family name of the User."),
    string("givenName", "The given name of the User."),
    string("middleName", "The middle name(s) of the User."),
    string("honorificPrefix", "The honorific prefix(es) of the User."),
    string("honorificSuffix", "The honorific suffix(es) of the User."),
];
const MANAGER_SUBS: [Attribute; 3] = [
    string("value", "The id of the SCIM resource representing the User's manager."),
    Attribute {
        reference_types: &["User"],
        ..attr("$ref", Kind::Reference, "The URI of the SCIM resource representing the User's manager.")
    },
    read_only(string("displayName", "The displayName of the User's manager.")),
];

pub(crate) static USER_SCHEMA: Schema = Schema {
    id: USER,
    name: "User",
    description: "User Account",
    attributes: &[
        Attribute {
            required: true,
            uniqueness: Uniqueness::Server,
            ..string("userName", "Unique identifier for the User, typically used by the user to directly authenticate.")
        },
        Attribute { sub_attributes: &NAME_SUBS, ..attr("name", Kind::Complex, "The components of the user's real name.") },
        string("displayName", "The name of the User, suitable for display to end-users."),
        string("nickName", "The casual way to address the user in real life."),
        Attribute {
            reference_types: &["external"],
            ..attr(
                "profileUrl",
                Kind::Reference,
                "A fully qualified URL pointing to a page representing the User's online profile.",
            )
        },
        string("title", "The user's title, such as \"Vice President\"."),
        string("userType", "Used to identify the relationship between the organization and the user."),
        string("preferredLanguage", "Indicates the User's preferred written or spoken language."),
        string("locale", "Used to indicate the User's default location for purposes of localizing items."),
        string("timezone", "The User's time zone in the 'Olson' time zone database format."),
        attr("active", Kind::Boolean, "A Boolean value indicating the User's administrative status."),
        Attribute {
            mutability: Mutability::WriteOnly,
            returned: Returned::Never,
            ..string("password", "Accepted for compatibility and discarded: this server stores no passwords.")
        },
        multi("emails", "Email addresses for the user.", &EMAIL_SUBS),
        multi("phoneNumbers", "Phone numbers for the User.", &PHONE_SUBS),
        multi("ims", "Instant messaging addresses for the User.", &IM_SUBS),
        multi("photos", "URLs of photos of the User.", &PHOTO_SUBS),
        multi("addresses", "A physical mailing address for this User.", &ADDRESS_SUBS),
        Attribute {
            mutability: Mutability::ReadOnly,
            ..multi("groups", "A list of groups to which the user belongs.", &GROUP_SUBS)
        },
        multi("entitlements", "A list of entitlements for the User.", &VALUE_SUBS),
        multi("roles", "A list of roles for the User.", &VALUE_SUBS),
        multi("x509Certificates", "A list of certificates issued to the User.", &VALUE_SUBS),
    ],
};

const MEMBER_SUBS: [Attribute; 4] = [
    Attribute { mutability: Mutability::Immutable, ..string("value", "Identifier of the member of this Group.") },
    Attribute {
        mutability: Mutability::Immutable,
        reference_types: &["User", "Group"],
        ..attr("$ref", Kind::Reference, "The URI corresponding to a SCIM resource that is a member of this Group.")
    },
    read_only(string("display", "A human-readable name, primarily used for display purposes.")),
    Attribute {
        mutability: Mutability::Immutable,
        ..typed("A label indicating the type of resource, e.g., 'User' or 'Group'.", &["User", "Group"])
    },
];

pub(crate) static GROUP_SCHEMA: Schema = Schema {
    id: GROUP,
    name: "Group",
    description: "Group",
    attributes: &[
        Attribute {
            required: true,
            uniqueness: Uniqueness::Server,
            ..string("displayName", "A human-readable name for the Group, unique ignoring case.")
        },
        multi("members", "A list of members of the Group.", &MEMBER_SUBS),
    ],
};

pub(crate) static ENTERPRISE_USER_SCHEMA: Schema = Schema {
    id: ENTERPRISE_USER,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        string("employeeNumber", "Numeric or alphanumeric identifier assigned to a person."),
        string("costCenter", "Identifies the name of a cost center."),
        string("organization", "Identifies the name of an organization."),
        string("division", "Identifies the name of a division."),
        string("department", "Identifies the name of a department."),
        Attribute { sub_attributes: &MANAGER_SUBS, ..attr("manager", Kind::Complex, "The User's manager.") },
    ],
};

const FACTOR_SUBS: [Attribute; 3] = [
    read_only(Attribute {
        canonical_values: &["totp", "webauthn"],
        ..string("type", "totp: an authenticator app; webauthn: a security key or passkey.")
    }),
    read_only(string("name", "The factor's name (a security key's is the one its user gave it).")),
    read_only(attr("created", Kind::DateTime, "When the factor was registered.")),
];

/// The second factor of a user as SCIM shows it: computed from the MFA store, never stored
/// in the body; `resetRequested` is the write-only switch that resets it.
pub(crate) static MFA_USER_SCHEMA: Schema = Schema {
    id: MFA_USER,
    name: "MfaUser",
    description: "Second factors of the User (authenticator app, security keys and passkeys), managed by provisiond",
    attributes: &[
        read_only(Attribute {
            canonical_values: &["none", "pending", "enrolled"],
            ..string(
                "status",
                "none: never enrolled; pending: must (re)enrol at next login; enrolled: holds at least one confirmed factor.",
            )
        }),
        read_only(attr("enrolledAt", Kind::DateTime, "When the first of the current factors was confirmed.")),
        read_only(attr("lastResetAt", Kind::DateTime, "When the factors were last reset.")),
        read_only(multi("factors", "The factors the User holds (never key material).", &FACTOR_SUBS)),
        Attribute {
            mutability: Mutability::WriteOnly,
            returned: Returned::Never,
            ..attr(
                "resetRequested",
                Kind::Boolean,
                "Set to true to reset the second factor: the user enrols again at the next login.",
            )
        },
    ],
};

/// A second resource type for tests, with nothing of the User: one attribute in its core schema,
/// one in an extension, a required label as its own check. Normalisation, PATCH, rendering and
/// the filter compiler handle it unchanged, as they will handle Groups.
#[cfg(test)]
pub(crate) mod gadget {
    use super::*;

    pub(crate) const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:Gadget";
    pub(crate) const COLOUR: &str = "urn:example:params:scim:schemas:extension:colour:2.0:Gadget";

    static CORE_SCHEMA: Schema = Schema {
        id: CORE,
        name: "Gadget",
        description: "A resource for tests",
        attributes: &[Attribute { required: true, ..string("label", "What the gadget is called.") }],
    };

    static COLOUR_SCHEMA: Schema = Schema {
        id: COLOUR,
        name: "ColouredGadget",
        description: "The colour of a gadget",
        attributes: &[string("colour", "Its colour.")],
    };

    pub(crate) static GADGET: ResourceType = ResourceType {
        name: "Gadget",
        endpoint: "/Gadgets",
        description: "A resource for tests",
        core: &CORE_SCHEMA,
        extensions: &[&COLOUR_SCHEMA],
        check: check_gadget,
    };

    fn check_gadget(body: &Map<String, Value>) -> Result<(), ScimError> {
        match body.get("label") {
            Some(_) => Ok(()),
            None => Err(ScimError::invalid_value("label is required")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        let user_name = USER_SCHEMA.attribute("USERNAME").unwrap();
        assert_eq!(user_name.name, "userName");
        assert!(USER_SCHEMA.attribute("emails").unwrap().sub("VALUE").is_some());
        assert!(USER_RESOURCE.schema("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user").is_some());
        assert!(USER_RESOURCE.extension(USER).is_none(), "the core schema is no extension");
        assert!(resource_type("user").is_some_and(|t| t.is_core(&USER_SCHEMA)));
    }

    #[test]
    fn discovery_json_describes_attributes() {
        let doc = USER_SCHEMA.to_json("http://h/scim/v2");
        let attrs = doc["attributes"].as_array().unwrap();
        let password = attrs.iter().find(|a| a["name"] == "password").unwrap();
        assert_eq!(password["returned"], "never");
        assert_eq!(password["mutability"], "writeOnly");
        let emails = attrs.iter().find(|a| a["name"] == "emails").unwrap();
        assert_eq!(emails["multiValued"], true);
        assert_eq!(emails["subAttributes"].as_array().unwrap().len(), 4);
        assert_eq!(doc["meta"]["location"], format!("http://h/scim/v2/Schemas/{USER}"));
    }

    #[test]
    fn resource_types_describe_their_schemas() {
        let doc = USER_RESOURCE.to_json("http://h/scim/v2");
        assert_eq!(doc["schema"], USER);
        assert_eq!(
            doc["schemaExtensions"],
            json!([{"schema": ENTERPRISE_USER, "required": false}, {"schema": MFA_USER, "required": false}])
        );
        assert_eq!(doc["meta"]["location"], "http://h/scim/v2/ResourceTypes/User");
        let gadget = &gadget::GADGET;
        assert_eq!(gadget.schemas().map(|s| s.id).collect::<Vec<_>>(), [gadget::CORE, gadget::COLOUR]);
        assert!(gadget.extension(ENTERPRISE_USER).is_none() && gadget.schema(USER).is_none());
        assert!(gadget.extension(&gadget::COLOUR.to_uppercase()).is_some());
    }
}
