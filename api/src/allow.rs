//! `Allow` on every 405 (RFC 9110 §15.5.5): the methods the route does serve, taken from the
//! spec's operations, so that the header and the spec cannot disagree.

use std::collections::HashMap;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, Middleware, Request, Response};

use crate::telemetry::RouteTable;

/// AllowHeader adds `Allow` to a 405 answer. It wraps the app's error conversion, so that it
/// sees the problem answer poem's router turned into.
pub struct AllowHeader {
    routes: RouteTable,
    allowed: HashMap<String, HeaderValue>,
}

impl AllowHeader {
    /// The header of each path template in `served`, by the methods served there (`HEAD` with
    /// `GET`, as the router answers it).
    pub fn new(served: impl IntoIterator<Item = (String, Vec<Method>)>) -> AllowHeader {
        let served: Vec<(String, Vec<Method>)> = served.into_iter().collect();
        let routes = RouteTable::new(served.iter().map(|(t, _)| t.clone()));
        let allowed = served
            .into_iter()
            .map(|(template, methods)| (template, allow_value(&methods)))
            .collect();
        AllowHeader { routes, allowed }
    }
}

/// The `Allow` value of `methods`: each once, `HEAD` after `GET`, in a stable order.
fn allow_value(methods: &[Method]) -> HeaderValue {
    let mut names: Vec<String> = Vec::new();
    for order in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        let served = methods.contains(&order) || (order == Method::HEAD && methods.contains(&Method::GET));
        if served {
            names.push(order.to_string());
        }
    }
    HeaderValue::from_str(&names.join(", ")).expect("method names are header-safe")
}

impl<E: Endpoint<Output = Response>> Middleware<E> for AllowHeader {
    type Output = AllowHeaderEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowHeaderEndpoint {
            inner,
            routes: self.routes.clone(),
            allowed: self.allowed.clone(),
        }
    }
}

pub struct AllowHeaderEndpoint<E> {
    inner: E,
    routes: RouteTable,
    allowed: HashMap<String, HeaderValue>,
}

impl<E: Endpoint<Output = Response>> Endpoint for AllowHeaderEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path().to_string();
        let mut resp = self.inner.call(req).await?;
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(allow) = self.allowed.get(&self.routes.label(&path))
        {
            resp.headers_mut().insert(header::ALLOW, allow.clone());
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_goes_with_get_and_the_order_is_fixed() {
        assert_eq!(allow_value(&[Method::POST, Method::GET]), "GET, HEAD, POST");
        assert_eq!(allow_value(&[Method::POST]), "POST");
    }
}
