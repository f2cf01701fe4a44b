"""The simulator's GraphQL API: an SDL schema of RunPod's fields, resolved from the world."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    execute,
    parse,
    validate,
)

from monitor.simulator.gpus import DATA_CENTERS, SERVERLESS_POOLS, gpu_catalog
from monitor.simulator.world import Moment, World

SDL = """
schema { query: Query  mutation: Mutation }

type Query {
  myself: User
  gpuTypes(input: GpuTypeFilter): [GpuType]
  pod(input: PodFilter): Pod
  endpoint(id: String!): Endpoint
  dataCenters: [DataCenter]
  serverlessGpuPools: [ServerlessGpuPool]
}

type User {
  id: String
  email: String
  pubKey: String
  clientBalance: Float
  currentSpendPerHr: Float
  spendLimit: Float
  underBalance: Boolean
  minBalance: Float
  maxServerlessConcurrency: Int
  clientLifetimeSpend: Float
  creditAlertThreshold: Float
  notifyLowBalance: Boolean
  notifyPodsGeneral: Boolean
  notifyPodsStale: Boolean
  machineQuota: Int
  referralEarned: Float
  templateEarned: Float
  hostBalance: Float
  spendDetails: SpendDetails
  dailyCharges: [DailyCharge]
  serverlessDiscount: ServerlessDiscount
  savingsPlans: [SavingsPlan]
  endpoints: [Endpoint]
  endpoint(id: String!): Endpoint
  networkVolumes: [NetworkVolume]
  pods: [Pod]
}

type SpendDetails {
  localStoragePerHour: Float networkStoragePerHour: Float gpuComputePerHour: Float
}
type DailyCharge {
  amount: Float updatedAt: String diskCharges: Float podCharges: Float apiCharges: Float
  serverlessCharges: Float type: String
}
type ServerlessDiscount { userId: String type: String discountFactor: Float expirationDate: String }
type SavingsPlan {
  id: String gpuTypeId: String podId: String costPerHr: Float startTime: String endTime: String
  upfrontCost: Float
}
type EnvironmentVariable { key: String value: String }
type NetworkVolume { id: String name: String size: Int dataCenterId: String }

type Endpoint {
  id: String
  name: String
  gpuIds: String
  idleTimeout: Int
  locations: String
  networkVolumeId: String
  scalerType: String
  scalerValue: Int
  templateId: String
  type: String
  userId: String
  version: Int
  workersMax: Int
  workersMin: Int
  workersStandby: Int
  gpuCount: Int
  env: [EnvironmentVariable]
  createdAt: String
  aiKey: String
  allowedCudaVersions: String
  executionTimeoutMs: Int
  instanceIds: [String]
  computeType: String
  flashBootType: String
  networkVolume: NetworkVolume
  pods: [Pod]
  template: PodTemplate
}

type PodTemplate {
  id: String name: String imageName: String dockerArgs: String containerDiskInGb: Int
  volumeInGb: Int volumeMountPath: String ports: String env: [EnvironmentVariable]
  isServerless: Boolean startSsh: Boolean startJupyter: Boolean isPublic: Boolean readme: String
  containerRegistryAuthId: String category: String boundEndpointId: String
}

type Pod {
  id: String name: String desiredStatus: String costPerHr: Float adjustedCostPerHr: Float
  gpuCount: Int containerDiskInGb: Int dockerArgs: String dockerId: String env: [String]
  imageName: String lastStatusChange: String machineId: String memoryInGb: Float podType: String
  port: Int ports: String uptimeSeconds: Int vcpuCount: Float volumeInGb: Float
  volumeMountPath: String endpointId: String runtime: PodRuntime machine: PodMachine
}
type PodRuntime { uptimeInSeconds: Int ports: [PodPort] gpus: [PodGpu] }
type PodPort { ip: String isIpPublic: Boolean privatePort: Int publicPort: Int type: String }
type PodGpu { id: String gpuUtilPercent: Float memoryUtilPercent: Float }
type PodMachine {
  gpuDisplayName: String podHostId: String dataCenterId: String gpuTypeId: String location: String
}

type GpuType {
  id: String displayName: String manufacturer: String memoryInGb: Int cudaCores: Int
  secureCloud: Boolean communityCloud: Boolean securePrice: Float communityPrice: Float
  communitySpotPrice: Float secureSpotPrice: Float oneWeekPrice: Float oneMonthPrice: Float
  threeMonthPrice: Float sixMonthPrice: Float maxGpuCount: Int maxGpuCountSecureCloud: Int
  maxGpuCountCommunityCloud: Int minPodGpuCount: Int
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}
type LowestPrice {
  gpuName: String gpuTypeId: String minimumBidPrice: Float uninterruptablePrice: Float
  minMemory: Int minVcpu: Int rentalPercentage: Float rentedCount: Int totalCount: Int
  stockStatus: String availableGpuCounts: [Int] gpuTypeCudaVersions: [GpuTypeCudaVersion]
  countryCode: String supportPublicIp: Boolean compliance: [String] maxUnreservedGpuCount: Int
}
type GpuTypeCudaVersion { cudaVersion: String availability: String }
type DataCenter { id: String name: String location: String gpuAvailability: [GpuAvailability] }
type GpuAvailability {
  gpuTypeId: String displayName: String stockStatus: String available: Boolean
}
type ServerlessGpuPool { id: String gpuTypeIds: [String] }
type RegistryAuth { id: String name: String }

input GpuTypeFilter { id: String ids: [String] }
input GpuLowestPriceInput {
  gpuCount: Int secureCloud: Boolean dataCenterId: String countryCode: String
  includeAiApi: Boolean allowedCudaVersions: [String] compliance: [String] minDisk: Int
  minMemoryInGb: Int minVcpuCount: Int minDownload: Int minUpload: Int supportPublicIp: Boolean
  globalNetwork: Boolean
}
input PodFilter { podId: String! }
input EnvironmentVariableInput { key: String! value: String! }
enum FlashBootType { OFF FLASHBOOT PRIORITY_FLASHBOOT }
enum CloudTypeEnum { ALL COMMUNITY SECURE }
input EndpointInput {
  id: String name: String templateId: String gpuIds: String networkVolumeId: String
  locations: String idleTimeout: Int scalerType: String scalerValue: Int workersMin: Int
  workersMax: Int workersStandby: Int allowedCudaVersions: String gpuCount: Int
  flashBootType: FlashBootType executionTimeoutMs: Int type: String
  env: [EnvironmentVariableInput]
}
input UpdateEndpointTemplateInput { endpointId: String! templateId: String! }
input SaveTemplateInput {
  id: String name: String! imageName: String! dockerArgs: String containerDiskInGb: Int
  volumeInGb: Int volumeMountPath: String ports: String env: [EnvironmentVariableInput]
  isServerless: Boolean containerRegistryAuthId: String startSsh: Boolean startJupyter: Boolean
  isPublic: Boolean readme: String
}
input SaveRegistryAuthInput { name: String! username: String! password: String! }
input UpdateRegistryAuthInput { id: String! username: String! password: String! }
input PodDeployInput {
  name: String imageName: String cloudType: CloudTypeEnum startSsh: Boolean gpuTypeId: String
  supportPublicIp: Boolean gpuCount: Int volumeInGb: Int minVcpuCount: Int minMemoryInGb: Int
  allowedCudaVersions: [String] dataCenterId: String countryCode: String dockerArgs: String
  containerDiskInGb: Int ports: String volumeMountPath: String env: [EnvironmentVariableInput]
  templateId: String networkVolumeId: String minDownload: Int minUpload: Int instanceId: String
}
input PodStopInput { podId: String! }
input PodResumeInput { podId: String! gpuCount: Int }
input PodTerminateInput { podId: String! }
input UpdateUserSettingsInput { pubKey: String }

type Mutation {
  saveEndpoint(input: EndpointInput!): Endpoint
  deleteEndpoint(id: String!): Boolean
  updateEndpointTemplate(input: UpdateEndpointTemplateInput!): Endpoint
  saveTemplate(input: SaveTemplateInput!): PodTemplate
  deleteTemplate(templateName: String!): Boolean
  saveRegistryAuth(input: SaveRegistryAuthInput!): RegistryAuth
  updateRegistryAuth(input: UpdateRegistryAuthInput!): RegistryAuth
  deleteRegistryAuth(registryAuthId: String!): Boolean
  podFindAndDeployOnDemand(input: PodDeployInput!): Pod
  deployCpuPod(input: PodDeployInput!): Pod
  podStop(input: PodStopInput!): Pod
  podResume(input: PodResumeInput!): Pod
  podTerminate(input: PodTerminateInput!): Boolean
  updateUserSettings(input: UpdateUserSettingsInput!): User
}
"""


@dataclass(frozen=True)
class Context:
    """What resolvers see: the world and the moment the request arrived."""

    world: World
    moment: Moment

    def myself(self) -> dict[str, Any]:
        return self.world.myself(self.moment)


Resolver = Callable[..., Any]
Info = GraphQLResolveInfo[Any]


def _ctx(info: Info) -> Context:
    ctx = info.context
    assert isinstance(ctx, Context)
    return ctx


def _new_id() -> str:
    return uuid.uuid4().hex[:14]


def _env_list(value: Any) -> Any:
    """`env` as RunPod's [{key, value}] even when the scenario wrote a mapping."""
    if isinstance(value, Mapping):
        return [{"key": k, "value": v} for k, v in value.items()]
    return value


def _find_endpoint(info: Info, endpoint_id: str) -> dict[str, Any] | None:
    return next((e for e in _ctx(info).myself()["endpoints"] if e.get("id") == endpoint_id), None)


def _q_myself(_root: Any, info: Info) -> dict[str, Any]:
    return _ctx(info).myself()


def _q_endpoint(_root: Any, info: Info, id: str) -> Any:
    return _find_endpoint(info, id)


def _q_gpu_types(_root: Any, info: Info, input: Any = None) -> Any:
    ctx = _ctx(info)
    gpus = gpu_catalog(ctx.world.gpu_overrides(ctx.moment))
    wanted: set[str] | None = None
    if input:
        wanted = set(input.get("ids") or []) | ({input["id"]} if input.get("id") else set())
    return [g for g in gpus if wanted is None or g["id"] in wanted]


def _q_pod(_root: Any, info: Info, input: Any = None) -> Any:
    pod_id = (input or {}).get("podId")
    return next((p for p in _ctx(info).myself()["pods"] if p.get("id") == pod_id), None)


def _q_data_centers(_root: Any, info: Info) -> Any:
    ctx = _ctx(info)
    gpus = [g for g in gpu_catalog(ctx.world.gpu_overrides(ctx.moment)) if g["id"] != "unknown"]
    out = []
    for dc in DATA_CENTERS:
        avail = []
        for g in gpus:
            stock = (g.get("lowestPrice") or {}).get("stockStatus")
            avail.append({"gpuTypeId": g["id"], "displayName": g.get("displayName"),
                          "stockStatus": stock, "available": stock not in (None, "None")})
        out.append({**dc, "gpuAvailability": avail})
    return out


def _q_pools(_root: Any, _info: Info) -> Any:
    return [{"id": pool, "gpuTypeIds": list(ids)} for pool, ids in SERVERLESS_POOLS.items()]


def _f_env(source: Any, _info: Info) -> Any:
    return _env_list(source.get("env")) if isinstance(source, Mapping) else None


def _f_pod_env(source: Any, _info: Info) -> Any:
    env = _env_list(source.get("env")) if isinstance(source, Mapping) else None
    if isinstance(env, list):
        return [f"{e['key']}={e['value']}" if isinstance(e, Mapping) else e for e in env]
    return env


def _f_lowest_price(source: Any, _info: Info, input: Any = None) -> Any:
    price = dict(source.get("lowestPrice") or {})
    count = (input or {}).get("gpuCount")
    counts = price.get("availableGpuCounts")
    # A count the hosts cannot give has no offer: RunPod answers stockStatus null then.
    if count and isinstance(counts, list) and count not in counts:
        price.update(stockStatus=None, uninterruptablePrice=None, minimumBidPrice=None)
    return price


def _m_save_endpoint(_root: Any, info: Info, input: Any) -> Any:
    existing = _find_endpoint(info, input["id"]) if input.get("id") else None
    return {**(existing or {}), **copy.deepcopy(input), "id": input.get("id") or _new_id()}


def _m_update_template(_root: Any, info: Info, input: Any) -> Any:
    existing = _find_endpoint(info, input["endpointId"])
    if existing is None:
        raise GraphQLError("Endpoint not found")
    return {**existing, "templateId": input["templateId"]}


def _m_save_template(_root: Any, _info: Info, input: Any) -> Any:
    return {**copy.deepcopy(input), "id": input.get("id") or _new_id()}


def _m_registry_auth(_root: Any, _info: Info, input: Any) -> Any:
    # Never echo the password back.
    return {"id": input.get("id") or _new_id(), "name": input.get("name")}


def _m_deploy_pod(_root: Any, _info: Info, input: Any) -> Any:
    pod = {k: v for k, v in input.items() if k != "env"}
    return {**pod, "id": _new_id(), "desiredStatus": "RUNNING", "env": input.get("env") or [],
            "machineId": _new_id(), "machine": {"podHostId": _new_id()}}


def _m_pod_state(status: str) -> Resolver:
    def resolve(_root: Any, info: Info, input: Any) -> Any:
        pods = _ctx(info).myself()["pods"]
        pod = next((p for p in pods if p.get("id") == input["podId"]), None)
        if pod is None:
            raise GraphQLError("Pod not found")
        return {**pod, "desiredStatus": status}

    return resolve


def _m_user_settings(_root: Any, info: Info, input: Any) -> Any:
    return {**_ctx(info).myself(), **input}


def _m_true(*_args: Any, **_kwargs: Any) -> bool:
    return True


def _m_null(*_args: Any, **_kwargs: Any) -> None:
    return None


_RESOLVERS: dict[str, dict[str, Resolver]] = {
    "Query": {
        "myself": _q_myself, "endpoint": _q_endpoint, "gpuTypes": _q_gpu_types, "pod": _q_pod,
        "dataCenters": _q_data_centers, "serverlessGpuPools": _q_pools,
    },
    "User": {"endpoint": _q_endpoint},
    "Endpoint": {"env": _f_env},
    "PodTemplate": {"env": _f_env},
    "Pod": {"env": _f_pod_env},
    "GpuType": {"lowestPrice": _f_lowest_price},
    "Mutation": {
        "saveEndpoint": _m_save_endpoint, "deleteEndpoint": _m_null,
        "updateEndpointTemplate": _m_update_template, "saveTemplate": _m_save_template,
        "deleteTemplate": _m_null, "saveRegistryAuth": _m_registry_auth,
        "updateRegistryAuth": _m_registry_auth, "deleteRegistryAuth": _m_null,
        "podFindAndDeployOnDemand": _m_deploy_pod, "deployCpuPod": _m_deploy_pod,
        "podStop": _m_pod_state("EXITED"), "podResume": _m_pod_state("RUNNING"),
        "podTerminate": _m_true, "updateUserSettings": _m_user_settings,
    },
}


def make_schema() -> GraphQLSchema:
    """The schema with its resolvers; other fields read the same key of a dict source."""
    schema = build_schema(SDL)
    for type_name, fields in _RESOLVERS.items():
        gql_type = schema.type_map[type_name]
        assert isinstance(gql_type, GraphQLObjectType)
        for field_name, resolver in fields.items():
            gql_type.fields[field_name].resolve = resolver
    return schema


SCHEMA = make_schema()


@dataclass(frozen=True)
class Outcome:
    """A GraphQL answer: HTTP status, JSON body, and the top-level fields it asked for."""

    status: int
    body: dict[str, Any]
    operations: tuple[str, ...]


def parse_request(query: Any) -> tuple[DocumentNode | None, tuple[str, ...], Outcome | None]:
    """Parse and validate; an invalid request comes back as a 400 Outcome."""
    if not isinstance(query, str) or not query.strip():
        return None, (), _error(400, "Must provide query string.")
    try:
        doc = parse(query)
    except GraphQLError as exc:
        return None, (), _error(400, exc.message)
    ops = _top_fields(doc)
    errors = validate(SCHEMA, doc)
    if errors:
        return None, ops, Outcome(400, {"errors": [e.formatted for e in errors]}, ops)
    return doc, ops, None


def run(doc: DocumentNode, variables: Any, operation: Any, ctx: Context) -> Outcome:
    """Execute a validated document against the world at `ctx.moment`."""
    ops = _top_fields(doc)
    if variables is not None and not isinstance(variables, dict):
        return _error(400, "Variables must be an object.", ops)
    result = execute(
        SCHEMA, doc, variable_values=variables, operation_name=operation, context_value=ctx
    )
    assert isinstance(result, ExecutionResult)
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [e.formatted for e in result.errors]
        # Argument or variable errors come back with no data at all: a bad request.
        if result.data is None:
            return Outcome(400, body, ops)
    return Outcome(200, body, ops)


def _error(status: int, message: str, ops: tuple[str, ...] = ()) -> Outcome:
    return Outcome(status, {"errors": [{"message": message}]}, ops)


def _top_fields(doc: DocumentNode) -> tuple[str, ...]:
    names: list[str] = []
    for definition in doc.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for sel in definition.selection_set.selections:
                name = getattr(sel, "name", None)
                if name is not None:
                    names.append(name.value)
    return tuple(names)
