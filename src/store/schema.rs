//! Diesel table definitions; kept in step with `migrations/{sqlite,postgres}` by hand
//! (both backends share them, so `diesel print-schema` of one would not fit the other).

diesel::table! {
    users (id) {
        id -> Text,
        user_name -> Text,
        user_name_key -> Text,
        external_id -> Nullable<Text>,
        active -> Bool,
        body -> Text,
        source -> Text,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    user_values (user_id, path, elem) {
        user_id -> Text,
        path -> Text,
        elem -> Integer,
        value -> Text,
        sort_key -> Bool,
    }
}

diesel::table! {
    api_tokens (name) {
        name -> Text,
        token_hash -> Text,
        scopes -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(user_values -> users (user_id));

diesel::table! {
    mfa_factors (user_id) {
        user_id -> Text,
        status -> Text,
        secret_sealed -> Nullable<Text>,
        enrolled_at -> Nullable<Timestamp>,
        last_reset_at -> Nullable<Timestamp>,
        last_step -> Nullable<BigInt>,
        failures -> Integer,
        failures_since -> Nullable<Timestamp>,
        locked_until -> Nullable<Timestamp>,
        totp_enrolled_at -> Nullable<Timestamp>,
        webauthn -> Nullable<Text>,
    }
}

diesel::table! {
    webauthn_credentials (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        aaguid -> Nullable<Text>,
        credential -> Text,
        sign_count -> BigInt,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webauthn_ceremonies (id) {
        id -> Text,
        user_id -> Text,
        kind -> Text,
        state -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    mfa_backup_codes (user_id, code_hash) {
        user_id -> Text,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> Timestamp,
        event_type -> Text,
        user_id -> Nullable<Text>,
        user_name -> Nullable<Text>,
        origin -> Text,
        actor -> Text,
        reason -> Nullable<Text>,
        request_id -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    mfa_enrolment_links (user_id) {
        user_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    groups (id) {
        id -> Text,
        display_name -> Text,
        display_name_key -> Text,
        external_id -> Nullable<Text>,
        body -> Text,
        source -> Text,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    group_users (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
    }
}

diesel::table! {
    group_groups (group_id, member_id) {
        group_id -> Text,
        member_id -> Text,
    }
}

diesel::joinable!(group_users -> groups (group_id));
diesel::joinable!(group_users -> users (user_id));

diesel::joinable!(mfa_factors -> users (user_id));
diesel::joinable!(mfa_enrolment_links -> users (user_id));
diesel::joinable!(mfa_backup_codes -> users (user_id));
diesel::joinable!(webauthn_credentials -> users (user_id));
diesel::joinable!(webauthn_ceremonies -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    user_values,
    mfa_factors,
    mfa_backup_codes,
    mfa_enrolment_links,
    directory_links,
    groups,
    group_users,
    group_groups,
    group_links
);
diesel::allow_tables_to_appear_in_same_query!(operators, console_sessions);

diesel::table! {
    directory_links (user_id) {
        user_id -> Text,
        entry_key -> Text,
        dn -> Text,
        fingerprint -> Text,
        synced_version -> BigInt,
        missing_since -> Nullable<Timestamp>,
        flag_mark -> Nullable<Text>,
    }
}

diesel::table! {
    sync_runs (id) {
        id -> Text,
        kind -> Text,
        started_by -> Text,
        status -> Text,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        created -> BigInt,
        updated -> BigInt,
        unchanged -> BigInt,
        deactivated -> BigInt,
        reactivated -> BigInt,
        resets_applied -> BigInt,
        flags_cleared -> BigInt,
        errors -> Text,
        high_water -> Nullable<Text>,
        duration_ms -> Nullable<BigInt>,
        groups_created -> BigInt,
        groups_updated -> BigInt,
        groups_deleted -> BigInt,
        memberships_changed -> BigInt,
    }
}

diesel::table! {
    group_links (group_id) {
        group_id -> Text,
        entry_key -> Text,
        dn -> Text,
    }
}

diesel::joinable!(group_links -> groups (group_id));

diesel::table! {
    sync_lease (name) {
        name -> Text,
        holder -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    sync_quarantine (entry_key) {
        entry_key -> Text,
        dn -> Text,
        change_mark -> Nullable<Text>,
        failures -> BigInt,
        error -> Text,
    }
}

diesel::table! {
    sync_ticks (schedule) {
        schedule -> Text,
        last_tick -> Timestamp,
    }
}

diesel::table! {
    sync_feed (name) {
        name -> Text,
        cookie -> Nullable<Text>,
        scope -> Text,
        held -> Nullable<Text>,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(directory_links -> users (user_id));

diesel::table! {
    deployment (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    operators (name) {
        name -> Text,
        role -> Text,
        password_hash -> Nullable<Text>,
        totp_sealed -> Nullable<Text>,
        pending_totp_sealed -> Nullable<Text>,
        totp_last_step -> Nullable<BigInt>,
        failures -> Integer,
        failures_since -> Nullable<Timestamp>,
        locked_until -> Nullable<Timestamp>,
        disabled -> Bool,
        created_at -> Timestamp,
        last_sign_in_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    operator_setup_links (token_hash) {
        token_hash -> Text,
        operator -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    operator_backup_codes (operator, code_hash) {
        operator -> Text,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    console_sessions (id_hash) {
        id_hash -> Text,
        operator -> Text,
        csrf_token -> Text,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
    }
}

diesel::joinable!(console_sessions -> operators (operator));
diesel::joinable!(operator_setup_links -> operators (operator));
diesel::joinable!(operator_backup_codes -> operators (operator));

diesel::table! {
    events (id) {
        id -> Text,
        at -> Timestamp,
        event_type -> Text,
        user_id -> Text,
        user_name -> Text,
        origin -> Text,
        actor -> Text,
        reason -> Nullable<Text>,
        data -> Text,
        dispatched -> Bool,
    }
}

diesel::table! {
    event_deliveries (receiver, event_id, signal) {
        receiver -> Text,
        event_id -> Text,
        signal -> Text,
        jti -> Text,
        attempts -> Integer,
        next_at -> Timestamp,
        last_error -> Nullable<Text>,
        claimed_by -> Nullable<Text>,
        claimed_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    event_receivers (receiver) {
        receiver -> Text,
        delivered -> BigInt,
        dropped -> BigInt,
        failed_attempts -> BigInt,
        last_error -> Nullable<Text>,
        last_error_at -> Nullable<Timestamp>,
        last_delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    ssf_streams (id) {
        id -> Text,
        owner -> Nullable<Text>,
        audience -> Text,
        events_requested -> Text,
        events_delivered -> Text,
        delivery_method -> Text,
        endpoint_url -> Nullable<Text>,
        authorization_header -> Nullable<Text>,
        subject_format -> Text,
        description -> Nullable<Text>,
        status -> Text,
        status_reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(event_deliveries -> events (event_id));
diesel::allow_tables_to_appear_in_same_query!(events, event_deliveries, event_receivers);

diesel::table! {
    /// Kept by triggers on `users` (see `store::user_count`).
    user_count_deltas (id) {
        id -> BigInt,
        delta -> BigInt,
        changes -> BigInt,
    }
}
