//! The service world (DRAFT, ABI 1 of `gateway:service`): a plugin mounted
//! at `/v1/services/{id}/...`, called after the gateway authenticated the
//! caller, with the host capabilities its manifest grants.

#[doc(hidden)]
pub mod __private {
    //! Generated bindings; not part of the SDK's API.
    #![allow(missing_docs, unsafe_code, clippy::all)]
    wit_bindgen::generate!({
        world: "service",
        path: "wit/service-v1",
        pub_export_macro: true,
        export_macro_name: "__export_service_world",
        default_bindings_module: "::plugin_sdk::service::__private",
    });
}

pub use self::__private::gateway::service::types::{
    Caller, Description, Header, PublicRoute, Request, Response,
};
pub use self::__private::gateway::service::{clock, devices, events, kv, log, timers};

/// A service plugin. `handle` answers every request routed to it.
pub trait Service {
    /// Public routes (answered without a token).
    fn describe() -> Description {
        Description {
            public_routes: Vec::new(),
        }
    }

    /// Answers one request.
    fn handle(request: Request) -> Response;

    /// A timer set with [`timers::schedule`] is due.
    fn on_timer(user_id: String, name: String) {
        let _ = (user_id, name);
    }
}

/// Exports a [`Service`] implementation as the plugin's entry points.
#[macro_export]
macro_rules! export_service {
    ($service:ty) => {
        #[doc(hidden)]
        pub struct __GatewayServiceExport;

        impl $crate::service::__private::Guest for __GatewayServiceExport {
            fn describe() -> $crate::service::Description {
                <$service as $crate::service::Service>::describe()
            }
            fn handle(request: $crate::service::Request) -> $crate::service::Response {
                <$service as $crate::service::Service>::handle(request)
            }
            fn on_timer(user_id: String, name: String) {
                <$service as $crate::service::Service>::on_timer(user_id, name)
            }
        }

        $crate::service::__private::__export_service_world!(__GatewayServiceExport);

        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "gateway-service-abi")]
        pub static __GATEWAY_SERVICE_ABI_VERSION: [u8; 4] = 1u32.to_le_bytes();
    };
}
