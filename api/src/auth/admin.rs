//! Who may call the ops routes: the holder of `ADMIN_TOKEN`, sent as a bearer token.
//!
//! The token is compared in constant time and never logged; a missing or wrong one is a 401
//! `unauthorized` problem that says nothing about what was sent.

use jobs::config::Secret;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::error::Problem;

/// AdminToken is the expected ops token, handed to the app as request data.
#[derive(Clone)]
pub struct AdminToken(pub Secret);

/// Operator access: `Authorization: Bearer <ADMIN_TOKEN>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "adminToken", checker = "check_admin")]
pub struct AdminAuth(Admin);

/// Admin is the proof that a request carried the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

async fn check_admin(req: &Request, bearer: Bearer) -> poem::Result<Admin> {
    let Some(AdminToken(expected)) = req.data::<AdminToken>() else {
        let missing = std::io::Error::other("the app was built without an AdminToken");
        return Err(Problem::internal(&missing).into());
    };
    if expected.matches(bearer.token.as_bytes()) {
        Ok(Admin)
    } else {
        Err(Problem::unauthorized().into())
    }
}
