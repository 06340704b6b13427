-- Argo CD health of a ModelDeployment (mlops.modeldeploy.dev), read from the conditions the
-- operator writes (kstatus conventions). Base Lua only: no `string` or `math`, so it runs from
-- argocd-cm without resource.customizations.useOpenLibs.
--   not yet observed (no status, observedGeneration behind)  -> Progressing
--   Stalled=True (a terminal failure, until the spec changes) -> Degraded
--   Ready=True (production serves what the spec asks for)     -> Healthy
--   Reconciling=True (deploying, testing, promoting)          -> Progressing
--   Ready=False, AwaitingApproval / AwaitingPromotion         -> Suspended (waits for a commit)
--   anything else                                             -> Progressing
local hs = {}

local function condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

-- The first of its arguments that is a non-empty string (select, not ipairs: some are nil).
local function text(...)
  for i = 1, select("#", ...) do
    local value = select(i, ...)
    if value ~= nil and value ~= "" then
      return value
    end
  end
  return ""
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the resource"
  return hs
end
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation ..
    " (observed: " .. status.observedGeneration .. ")"
  return hs
end

local ready = condition(status.conditions, "Ready")
local reconciling = condition(status.conditions, "Reconciling")
local stalled = condition(status.conditions, "Stalled")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled.message, status.message, stalled.reason)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready.message, status.message)
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling.message, status.message, reconciling.reason)
  return hs
end
if ready ~= nil and (ready.reason == "AwaitingApproval" or ready.reason == "AwaitingPromotion") then
  hs.status = "Suspended"
  hs.message = text(ready.message, status.message, ready.reason)
  return hs
end
hs.status = "Progressing"
hs.message = text(status.message, ready ~= nil and ready.message or nil, "Waiting for the operator")
return hs
