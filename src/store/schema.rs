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
diesel::allow_tables_to_appear_in_same_query!(users, user_values);
