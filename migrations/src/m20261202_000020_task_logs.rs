//! `task_logs`: what a step prints, line by line as it runs, shipped by its worker
//! under the task's fence, so that it can be followed live (`GET
//! /v1/deployments/{id}/tasks/{task}/logs?follow=true`). Keyed by deployment, task,
//! attempt and line number; deleted with its deployment.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum TaskLogs {
    Table,
    DeploymentId,
    TaskId,
    Attempt,
    Seq,
    Line,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TaskLogs::Table)
                    .col(uuid(TaskLogs::DeploymentId))
                    .col(string(TaskLogs::TaskId))
                    .col(integer(TaskLogs::Attempt))
                    .col(big_integer(TaskLogs::Seq))
                    .col(text(TaskLogs::Line))
                    .primary_key(
                        Index::create()
                            .col(TaskLogs::DeploymentId)
                            .col(TaskLogs::TaskId)
                            .col(TaskLogs::Attempt)
                            .col(TaskLogs::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(TaskLogs::Table, TaskLogs::DeploymentId)
                            .to(Deployments::Table, Deployments::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TaskLogs::Table).to_owned())
            .await
    }
}
