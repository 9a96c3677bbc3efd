-- Argo CD health check for buildkit.dev/Builder.
--
-- Install it in argocd-cm under resource.customizations.health.buildkit.dev_Builder
-- (health/argocd-cm.yaml beside this file is that patch, ready for kubectl patch).
-- Argo CD runs it with the live Builder in the global `obj` and reads hs.status and
-- hs.message. Written for Lua 5.1, the dialect of Argo CD's interpreter.
--
-- What it reads is the Builder's status as the operator writes it:
--   status.observedGeneration  the spec generation the status describes
--   status.phase               Pending, Ready, Degraded, Drifted, Missing or Invalid
--   status.message             one line about the phase
--   status.conditions          Ready, Progressing, Drifted, Degraded (status, reason, message)

local hs = {}

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

-- The first non-empty string of the arguments, or the last argument.
local function first(...)
  local n = select("#", ...)
  for i = 1, n do
    local value = select(i, ...)
    if type(value) == "string" and value ~= "" then
      return value
    end
  end
  return select(n, ...)
end

local status = obj.status
if type(status) ~= "table" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report on the Builder"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation or "?")
  return hs
end

local progressing = condition(status, "Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = first(progressing.message, progressing.reason, status.message, "Rolling out")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = first(status.message, ready.message, "Ready")
  return hs
end

local phase = status.phase
if phase == "Invalid" or phase == "Degraded" or phase == "Drifted" or phase == "Missing" then
  local detail = condition(status, phase == "Invalid" and "Ready" or phase) or ready or {}
  hs.status = "Degraded"
  hs.message = first(status.message, detail.message, detail.reason, phase)
  return hs
end

hs.status = "Progressing"
hs.message = first(status.message, ready and ready.message, "Phase " .. tostring(phase or "unknown"))
return hs
