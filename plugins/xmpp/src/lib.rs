//! XMPP connector (ejabberd HTTP API). To be written.
plugin_sdk::export_connector!(Xmpp);
