"""Marshmallow schemas of the tenants API (request bodies and responses)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class StrictSchema(Schema):
    """Unknown fields are an error, not silently dropped: a typo should get an answer."""

    class Meta:
        ordered = True


class RoleOut(StrictSchema):
    key = fields.String()
    name = fields.String()
    name_zh = fields.String()
    permissions = fields.Function(lambda role: sorted(role.effective_permissions))
    builtin = fields.Boolean()
    data_scope = fields.Function(lambda role: "all" if role.key == "admin" else role.data_scope,
                                 metadata={"description": "Records its users see: own, department, subtree, all."})


class RoleScopeIn(StrictSchema):
    data_scope = fields.String(required=True, validate=validate.OneOf(["own", "department", "subtree", "all"]))


class RolePermissionsIn(StrictSchema):
    permissions = fields.List(fields.String(validate=validate.Length(max=64)), required=True,
                              validate=validate.Length(max=200))


class UserOut(StrictSchema):
    id = fields.UUID()
    email = fields.String()
    name = fields.String()
    role = fields.String(attribute="role_key")
    department_id = fields.UUID(allow_none=True)
    active = fields.Boolean()
    locale = fields.String(allow_none=True)
    last_login_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    version = fields.Integer()


class UserCreate(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))
    name = fields.String(validate=validate.Length(min=1, max=200))
    role = fields.String(load_default="sales", validate=validate.Length(min=1, max=40))
    password = fields.String(load_only=True, validate=validate.Length(max=256))
    department_id = fields.UUID(allow_none=True)


class UserUpdate(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    role = fields.String(validate=validate.Length(min=1, max=40))
    department_id = fields.UUID(allow_none=True)
    locale = fields.String(validate=validate.OneOf(["en", "zh"]))
    active = fields.Boolean()


class UserQuery(StrictSchema):
    q = fields.String(validate=validate.Length(max=100))
    active = fields.Boolean()


class DepartmentOut(StrictSchema):
    id = fields.UUID()
    name = fields.String()
    parent_id = fields.UUID(allow_none=True)
    version = fields.Integer()


class DepartmentIn(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    parent_id = fields.UUID(allow_none=True, load_default=None)


class AuditOut(StrictSchema):
    id = fields.UUID()
    at = fields.DateTime()
    actor_id = fields.UUID(allow_none=True)
    actor_label = fields.String()
    action = fields.String()
    entity_type = fields.String()
    entity_id = fields.String(allow_none=True)
    before = fields.Dict(allow_none=True)
    after = fields.Dict(allow_none=True)
    request_id = fields.String(allow_none=True)


class AuditQuery(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    before = fields.UUID()
    entity_type = fields.String(validate=validate.Length(max=64))


class ClientOut(StrictSchema):
    client_id = fields.String()
    name = fields.String()
    scopes = fields.List(fields.String())
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class ClientCreated(ClientOut):
    client_secret = fields.String()


class ClientIn(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    scopes = fields.List(fields.String(validate=validate.Length(max=64)), required=True,
                         validate=validate.Length(min=1, max=100))


class MeOut(StrictSchema):
    kind = fields.String()
    label = fields.String()
    tenant = fields.String()
    permissions = fields.List(fields.String())
    user = fields.Nested(UserOut, allow_none=True)


class PersonalTokenOut(StrictSchema):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The token's first characters, to tell tokens apart."})
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True, metadata={"description": "Updated at most once a minute."})
    expires_at = fields.DateTime(allow_none=True)


class PersonalTokenCreated(PersonalTokenOut):
    token = fields.String(metadata={"description": "The bearer token: shown in this response only."})


class PersonalTokenIn(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    expires_days = fields.Integer(allow_none=True, load_default=None, strict=True,
                                  validate=validate.Range(min=1, max=3650),
                                  metadata={"description": "Lifetime in days; null: until revoked."})
