//! Token stores under the adapters: a store that fails, and a rotated pair that
//! survives a restart.

use http::StatusCode;
use procore_auth_conformance::{
    authorized_manager, me, oauth, scenario, token_transport, Client, TOKEN_CALL_TIMEOUT,
};
use procore_auth_core::test_util::FaultyStore;
use procore_auth_core::{FileStore, RefreshTokenGrant, StoreError, TokenManager, TokenStore};
use procore_auth_testkit::Emulator;

scenario! {
    /// A save that fails leaves the refreshed token in use (and reported); the next
    /// refresh saves.
    #[tokio::test]
    async fn a_failing_store_keeps_the_token_in_use_and_saves_next_time(adapter) {
        let emulator = Emulator::start().await;
        let store = FaultyStore::default();
        store.fail_next_saves(1);
        let manager = authorized_manager(&emulator, |builder| {
            builder.store(store.clone())
        })
        .await;
        let client = Client::new(adapter, &manager);
        let url = me(&emulator);

        emulator.expire_all_tokens();
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        assert!(matches!(manager.last_store_error(), Some(StoreError::Io(_))));
        assert_eq!(manager.metrics().store_failures, 1);
        assert!(store.memory().load().await.unwrap().is_none());

        emulator.expire_all_tokens();
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        let saved = store.memory().load().await.unwrap().unwrap();
        assert!(saved.same_credentials(&manager.token().unwrap()));
        assert!(manager.last_store_error().is_none());
    }
}

scenario! {
    /// A refresh rotates the pair and the file holds the new one before it is used; a
    /// new process starting from the file alone goes on without reauthorizing,
    /// including its own refresh with the rotated refresh token.
    #[tokio::test]
    async fn rotation_survives_a_restart_from_the_file_store(adapter) {
        let emulator = Emulator::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        let first = authorized_manager(&emulator, |builder| builder.store(FileStore::new(&path))).await;
        first.set_token(first.token().unwrap()).await.unwrap();
        let url = me(&emulator);

        emulator.expire_all_tokens();
        let client = Client::new(adapter, &first);
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        let on_disk = FileStore::new(&path).load().await.unwrap().unwrap();
        assert!(on_disk.same_credentials(&first.token().unwrap()));
        drop((client, first));

        let restarted = TokenManager::builder(RefreshTokenGrant::new(
            oauth(&emulator),
            token_transport(TOKEN_CALL_TIMEOUT),
        ))
        .store(FileStore::new(&path))
        .build();
        let client = Client::new(adapter, &restarted);
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        emulator.expire_all_tokens();
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 2, "{stats:?}");
        assert_eq!(stats.consumed_refresh_tokens.len(), 2);
    }
}
