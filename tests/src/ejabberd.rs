//! A real ejabberd on loopback for the XMPP connector tests.
