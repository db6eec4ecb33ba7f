//! What several routes take from a request the same way: the `Idempotency-Key` header, and a
//! JSON body kept exactly as it arrived (for the webhooks, which store what the provider sent and,
//! for Stripe, check a signature over those bytes).

use std::borrow::Cow;
use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::error::ContentTypeError;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

/// IdempotencyKey is the `Idempotency-Key` header's value: 1 to 200 visible ASCII characters.
/// Routes declare it as `#[oai(name = "Idempotency-Key")] Header<Option<IdempotencyKey>>` (or
/// `Header<IdempotencyKey>` where it is required), each with its own description of what a
/// repeat does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    const MAX_LEN: usize = 200;
    const PATTERN: &str = "^[!-~]+$";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Type for IdempotencyKey {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            max_length: Some(Self::MAX_LEN),
            min_length: Some(1),
            pattern: Some(Self::PATTERN.into()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromParameter for IdempotencyKey {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let visible_ascii = value.bytes().all(|b| (b'!'..=b'~').contains(&b));
        if value.is_empty() || value.len() > Self::MAX_LEN || !visible_ascii {
            return Err(ParseError::custom(format!(
                "must be 1 to {} visible ASCII characters ({})",
                Self::MAX_LEN,
                Self::PATTERN
            )));
        }
        Ok(IdempotencyKey(value.to_string()))
    }
}

/// RefuseUnreadableKey answers 400 `invalid-request` to an `Idempotency-Key` header whose value
/// is not text at all (bytes past ASCII): the header extractor would take it for no header, and
/// a request its sender made safe to repeat would quietly not be.
pub struct RefuseUnreadableKey;

impl<E: poem::Endpoint> poem::Middleware<E> for RefuseUnreadableKey {
    type Output = RefuseUnreadableKeyEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RefuseUnreadableKeyEndpoint { inner }
    }
}

pub struct RefuseUnreadableKeyEndpoint<E> {
    inner: E,
}

impl<E: poem::Endpoint> poem::Endpoint for RefuseUnreadableKeyEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        if req
            .headers()
            .get_all("idempotency-key")
            .iter()
            .any(|v| v.to_str().is_err())
        {
            return Err(crate::error::Problem::invalid_request(format!(
                "the Idempotency-Key header must be 1 to {} visible ASCII characters ({})",
                IdempotencyKey::MAX_LEN,
                IdempotencyKey::PATTERN
            ))
            .into());
        }
        self.inner.call(req).await
    }
}

/// RawBodyDoc is how a [`RawBody`] documents itself in the spec, and how much it takes.
pub trait RawBodyDoc {
    /// The most bytes the body may have.
    const MAX_BYTES: usize;
    /// The request body's description.
    const DESCRIPTION: &'static str;
    /// The body's schema.
    fn schema_ref() -> MetaSchemaRef;
    /// Registers the types the schema refers to.
    fn register(_registry: &mut Registry) {}
}

/// RawBody is a JSON request body exactly as it arrived: nothing parses and re-serialises it
/// first. `D` says what it documents itself as.
pub struct RawBody<D>(pub Vec<u8>, PhantomData<D>);

impl<'a, D: RawBodyDoc + Send> ApiExtractor<'a> for RawBody<D> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        D::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(D::DESCRIPTION),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: D::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        require_json(request)?;
        // The body limit middleware already refused a longer Content-Length; this holds whatever
        // the header said.
        let bytes = body.take()?.into_bytes_limit(D::MAX_BYTES).await?;
        Ok(RawBody(bytes.to_vec(), PhantomData))
    }
}

/// Refuses a request whose body is not declared JSON (`application/json`, or `+json`), as
/// poem-openapi's `Json` does, for extractors that read the body themselves.
pub(super) fn require_json(request: &Request) -> poem::Result<()> {
    match request.content_type() {
        Some(ct) if <Json<serde_json::Value> as Payload>::check_content_type(ct) => Ok(()),
        Some(ct) => Err(ContentTypeError::NotSupported {
            content_type: ct.to_string(),
        }
        .into()),
        None => Err(ContentTypeError::ExpectContentType.into()),
    }
}
