//! The sea-orm entities behind [`super::SeaOrmStore`]: private to the store, which
//! speaks the domain to everyone else. Columns mirror the `migrations` crate.

// The entity macros generate `pub` items; they are reachable only through this private module.
#![allow(unreachable_pub)]

pub(crate) mod tenants {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub created_at: i64,
        /// Its share of the fleet: `weight × tenant-limit` tasks at once, `weight`
        /// dispatches per turn of the relay's claim.
        pub weight: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod api_tokens {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub token_hash: String,
        pub created_at: i64,
        pub name: Option<String>,
        /// `read`, `deploy` or `admin`.
        pub scope: String,
        pub expires_at: Option<i64>,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod apps {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "apps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub name: String,
        pub release_seq: i32,
        pub created_at: i64,
        pub concurrency: Option<String>,
        pub strategy: Option<String>,
        pub deployment_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod deployments {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "deployments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub app_id: Uuid,
        pub app: String,
        pub state: String,
        pub n_open: i32,
        pub has_failed: bool,
        pub base_release: Option<i32>,
        pub release_version: Option<i32>,
        #[sea_orm(column_type = "Text")]
        pub manifest: String,
        #[sea_orm(column_type = "Text")]
        pub plan: String,
        pub created_at: i64,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        pub idempotency_key: Option<String>,
        pub request_hash: Option<String>,
        pub cancel_requested_at: Option<i64>,
        pub rollback_to: Option<i32>,
        pub replaces: Option<Uuid>,
        pub auto_rollback: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub external_update: Option<String>,
        pub strategy: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod tasks {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub deployment_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
        pub kind: String,
        pub component: String,
        pub state: String,
        pub attempt: i32,
        pub fence: Option<i64>,
        pub n_pending: i32,
        #[sea_orm(column_type = "Text")]
        pub spec: String,
        pub artifact_from: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub artifact: Option<String>,
        pub worker: Option<String>,
        pub lease_until: Option<i64>,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        #[sea_orm(column_type = "Text", nullable)]
        pub log: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub error: Option<String>,
        pub tenant_id: Option<Uuid>,
        pub lock_key: Option<String>,
        pub retry_at: Option<i64>,
        pub phase: Option<String>,
        pub seq: i64,
        pub version: Option<String>,
        /// Its dispatch was claimed by a relay since it last became `ready`.
        pub handed_out: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod task_needs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_needs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub deployment_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub need_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod releases {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "releases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        pub deployment_id: Option<Uuid>,
        #[sea_orm(column_type = "Text")]
        pub components: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod external_updates {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "external_updates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub component: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub artifact_hash: String,
        #[sea_orm(column_type = "Text")]
        pub artifact: String,
        pub version: Option<String>,
        pub sha: Option<String>,
        pub release_version: Option<i32>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub queue: String,
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub created_at: i64,
        pub claimed_until: Option<i64>,
        pub not_before: Option<i64>,
        /// The dispatched task's tenant, deployment, id and attempt.
        pub tenant_id: Option<Uuid>,
        pub deployment_id: Option<Uuid>,
        pub task_id: Option<String>,
        pub attempt: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod fences {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "fences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub lock_key: String,
        pub fence: i64,
        /// Tasks of the component were handed back to wait for its running task.
        pub waiters: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod deployed_components {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "deployed_components")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub component: String,
        #[sea_orm(column_type = "Text")]
        pub spec: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub artifact: Option<String>,
        pub version: Option<String>,
        pub deployment_id: Option<Uuid>,
        pub fence: Option<i64>,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod tenant_slots {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_slots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub slot: i32,
        pub deployment_id: Option<Uuid>,
        pub task_id: Option<String>,
        pub fence: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        /// The token that asked.
        pub token_id: Option<Uuid>,
        pub at: i64,
        pub action: String,
        /// What it acted on: a deployment's id, an app, a token's id.
        pub target: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod saved_plans {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "saved_plans")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub app: String,
        pub created_at: i64,
        /// The plan's content as JSON.
        #[sea_orm(column_type = "Text")]
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod hooks {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "hooks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub app: String,
        /// `github` or `registry`.
        pub kind: String,
        pub branch: Option<String>,
        pub secret: String,
        /// During a rotation: the secret before, valid beside the new one.
        pub previous_secret: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod hook_deliveries {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "hook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hook_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery: String,
        pub received_at: i64,
        pub status: i32,
        #[sea_orm(column_type = "Text")]
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod task_logs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_logs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub deployment_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub attempt: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        #[sea_orm(column_type = "Text")]
        pub line: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
